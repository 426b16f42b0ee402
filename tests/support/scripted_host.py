"""A scripted fake of the Host protocol, for unit tests of the steps that run commands on a hub
host: no Docker, no SSH.

It answers a command from the first rule whose pattern it matches (``re.search``), and the
read-only snapshot a deploy takes (:func:`hubops.host.docker.snapshot`) from its scripted
files, images, containers and sums. Like a real host it fails a command whose exit code is not
0 when the caller checks (``CommandError``). It refuses any command no rule answers, so a test
sees every command a step sends, and one that sends something new fails until the test says
what the host answers.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hubops.errors import CommandError
from hubops.host.base import Result

MARK = "=== hubops snapshot"

Answer = Callable[[str, str | None], "tuple[int, str] | str"]


@dataclass
class Rule:
    pattern: re.Pattern[str]
    answer: Answer
    times: int | None = None  # None: any number of times
    used: int = 0


@dataclass
class ScriptedHost:
    """Answers commands from rules and a scripted snapshot; records every command."""

    name: str = "scripted"
    files: dict[str, str] = field(default_factory=dict)
    images: list[dict[str, object]] = field(default_factory=list)
    containers: list[dict[str, object]] = field(default_factory=list)
    sums: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    stdins: list[str | None] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)

    def on(
        self,
        pattern: str,
        stdout: str = "",
        code: int = 0,
        *,
        answer: Answer | None = None,
        times: int | None = None,
    ) -> ScriptedHost:
        """Answer commands that match ``pattern`` (a regex) with ``stdout`` and ``code``, or
        with what ``answer(command, stdin)`` gives (stdout, or (code, stdout))."""

        def fixed(_command: str, _stdin: str | None) -> tuple[int, str]:
            return code, stdout

        self.rules.append(Rule(re.compile(pattern), answer or fixed, times))
        return self

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        self.commands.append(command)
        self.stdins.append(stdin)
        if MARK in command:
            result = Result(command, 0, self._snapshot(command), "")
        else:
            result = self._answer(command, stdin)
        if check and not result.ok:
            raise CommandError(self.name, result)
        return result

    def sent(self, pattern: str) -> list[str]:
        """The commands sent so far that match ``pattern``."""
        return [c for c in self.commands if re.search(pattern, c)]

    def _answer(self, command: str, stdin: str | None) -> Result:
        for rule in self.rules:
            if rule.times is not None and rule.used >= rule.times:
                continue
            if rule.pattern.search(command):
                rule.used += 1
                got = rule.answer(command, stdin)
                code, out = got if isinstance(got, tuple) else (0, got)
                return Result(command, code, out, "" if code == 0 else out)
        raise AssertionError(f"{self.name}: no rule answers this command: {command}")

    def _snapshot(self, command: str) -> str:
        out = [f"{MARK} files"]
        for path in _read_order(command):
            text = self.files.get(path)
            out.append("F -" if text is None else f"F {base64.b64encode(text.encode()).decode()}")
        out.append(f"{MARK} images")
        out.append(json.dumps(self.images))
        out.append(f"{MARK} containers")
        out.append(json.dumps(self.containers))
        out.append(f"{MARK} sums")
        out += self.sums
        return "\n".join(out) + "\n"


def _read_order(command: str) -> list[str]:
    paths = []
    for part in command.split("; "):
        if part.startswith("if [ -f "):
            paths.append(part.split("if [ -f ", 1)[1].split(" ]", 1)[0].strip("'"))
    return paths


def container(
    name: str,
    *,
    running: bool = True,
    image: str = "img",
    labels: dict[str, str] | None = None,
    **more: object,
) -> dict[str, object]:
    """A container as ``docker inspect`` shows it (the fields hubops reads)."""
    return {
        "Id": f"{abs(hash(name)):064x}"[:64],
        "Name": f"/{name}",
        "State": {"Status": "running" if running else "exited", "Running": running},
        "Config": {"Image": image, "Labels": labels or {}},
        **more,
    }
