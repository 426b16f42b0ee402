"""A scratch checkout of this repo that a test may change freely, and where the repo is."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


SHIPPED_ENVS = sorted(
    p.stem
    for p in (REPO_ROOT / "config" / "environments").glob("*.yaml")
    if not p.name.startswith("_")
)


OPTIONS: dict[str, str] = {"env": "local"}


def tested_env_name() -> str:
    """The --env option (usable at collection time, for parametrization)."""
    return OPTIONS["env"]


class Checkout:
    """A copy of the repo's config, tasks.py and invoke.yaml in a temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def env_file(self, name: str) -> Path:
        return self.root / "config" / "environments" / f"{name}.yaml"

    def write_env(self, name: str, text: str) -> Path:
        path = self.env_file(name)
        path.write_text(text, encoding="utf-8")
        return path

    def read_env(self, name: str) -> str:
        return self.env_file(name).read_text(encoding="utf-8")

    def set_setting(self, name: str, key: str, value: object) -> None:
        """Set one setting of env `name`; `key` is a dotted path (``gpu.policy``), and None
        takes the setting out."""
        import yaml

        path = self.env_file(name)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def edit_env(self, name: str, old: str, new: str, as_name: str | None = None) -> Path:
        """Write env `as_name` (default: `name`) as `name` with `old` replaced by `new`."""
        text = self.read_env(name)
        assert old in text, f"{old!r} is not in {name}.yaml; the test is out of date"
        return self.write_env(as_name or name, text.replace(old, new, 1))
