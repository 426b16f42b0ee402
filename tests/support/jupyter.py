"""A user's JupyterLab as the browser drives it: a terminal and kernels over their websockets,
through the hub's proxy, with the cookies of the user's login (tests.support.hub.HubClient)."""

from __future__ import annotations

import base64
import json
import re
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import websocket

from tests.support.hub import HubClient

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _ws_url(client: HubClient, path: str) -> str:
    url = client.url(path)
    return "wss" + url[5:] if url.startswith("https") else "ws" + url[4:]


def _connect(client: HubClient, username: str, path: str) -> websocket.WebSocket:
    prefix = f"/user/{username}"
    cookies = "; ".join(
        f"{c.name}={c.value}"
        for c in client.session.cookies
        if (c.path or "/") in ("/", "/hub/") or (c.path or "").startswith(prefix)
    )
    sslopt: dict[str, Any] = {}
    if client.base_url.startswith("https"):
        if client.verify is False:
            sslopt = {"cert_reqs": ssl.CERT_NONE}
        elif isinstance(client.verify, str):
            sslopt = {"ca_certs": client.verify}
    return websocket.create_connection(
        _ws_url(client, f"{prefix}/{path.lstrip('/')}"),
        header=[f"Cookie: {cookies}"],
        sslopt=sslopt,
        timeout=30,
    )


def _api(client: HubClient, username: str, method: str, path: str, **kwargs: Any) -> Any:
    """A call to the user's server's REST API; its JSON answer."""
    response = client.server(username, method, f"api/{path.lstrip('/')}", **kwargs)
    assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


@dataclass
class Terminal:
    """A JupyterLab terminal: the shell the server starts (bash -l), over terminals/websocket."""

    ws: websocket.WebSocket
    seen: list[str] = field(default_factory=list)

    def run(self, command: str, timeout: float = 120) -> str:
        """Type ``command`` and Enter; return what the shell printed after the command line
        until it finished (escape sequences and carriage returns removed)."""
        token = uuid.uuid4().hex[:12]
        # the marker is printed by printf from two halves, so the echo of the typed line
        # never contains it
        self.ws.send(json.dumps(["stdin", f"{command}; printf '%s-%s\\n' END {token}\r"]))
        out = ""
        deadline = time.monotonic() + timeout
        while f"END-{token}" not in out:
            if time.monotonic() > deadline:
                raise AssertionError(f"{command!r} did not finish in {timeout}s:\n{out[-2000:]}")
            message = json.loads(self.ws.recv())
            if message[0] == "stdout":
                out += ANSI.sub("", message[1])
            elif message[0] == "disconnect":
                raise AssertionError(f"the terminal closed while running {command!r}:\n{out}")
        text = out.split(f"END-{token}")[0]
        self.seen.append(text)
        lines = text.split("\n")
        # the first line is the shell echoing what was typed
        return "\n".join(lines[1:]) if len(lines) > 1 else ""


@contextmanager
def terminal(client: HubClient, username: str) -> Iterator[Terminal]:
    """A new terminal of the user's server, closed (its shell exits) at the end."""
    name = _api(client, username, "POST", "terminals")["name"]
    ws = _connect(client, username, f"terminals/websocket/{name}")
    try:
        ws.send(json.dumps(["set_size", 50, 400, 0, 0]))
        term = Terminal(ws)
        term.run("true")  # the login shell has read its profile and answers
        yield term
        # exit as a user does, so that bash writes its history; wait until the shell is gone
        ws.send(json.dumps(["stdin", "exit\r"]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                message = json.loads(ws.recv())
            except (websocket.WebSocketException, OSError, ValueError):
                break
            if message[0] == "disconnect":
                break
    finally:
        ws.close()
        # the shell has exited, or the terminal goes now
        client.server(username, "DELETE", f"api/terminals/{name}", 30)


@dataclass
class Result:
    stdout: str
    error: str  # "" when the cell ran without an exception


@dataclass
class Kernel:
    """A notebook kernel, over api/kernels/<id>/channels (Jupyter's JSON message format)."""

    ws: websocket.WebSocket
    session: str

    def execute(self, code: str, timeout: float = 180) -> Result:
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": self.session,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        stdout, error = "", ""
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"the cell did not finish in {timeout}s: {code!r}\n{stdout}")
            message = json.loads(self.ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                stdout += content["text"]
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                return Result(stdout, error)


@contextmanager
def kernel(client: HubClient, username: str, name: str = "python3") -> Iterator[Kernel]:
    """A new kernel of the user's server (kernelspec ``name``), shut down at the end."""
    kernel_id = _api(client, username, "POST", "kernels", json={"name": name})["id"]
    session = uuid.uuid4().hex
    ws = _connect(client, username, f"api/kernels/{kernel_id}/channels?session_id={session}")
    try:
        yield Kernel(ws, session)
    finally:
        ws.close()
        _api(client, username, "DELETE", f"kernels/{kernel_id}")


def upload(client: HubClient, username: str, path: str, data: bytes) -> None:
    """Put a file in the user's directory through the contents API, as JupyterLab's upload."""

    _api(
        client,
        username,
        "PUT",
        f"contents/{path.lstrip('/')}",
        json={"type": "file", "format": "base64", "content": base64.b64encode(data).decode()},
    )


def hit_the_memory_limit(client: HubClient, username: str, limit_bytes: int) -> None:
    """Allocate 512 MiB past the server's memory limit in a terminal, as a runaway kernel
    does; the kernel's OOM killer stops that process (exit status 137)."""
    mib = limit_bytes // 2**20 + 512
    with terminal(client, username) as term:
        out = term.run(f"python3 -c \"b = b'x' * ({mib} * 2**20)\"; echo RC=$?")
    assert "RC=137" in out, f"allocating past the limit was not killed: {out}"
