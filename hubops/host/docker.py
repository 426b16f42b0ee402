"""The Docker engine of a hub host, driven through its docker CLI over a :class:`Host`.

The same functions serve this machine (``LocalHost``) and a lab server over SSH
(``SSHHost``): one code path, whatever the target.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from hubops.host.base import Host, quote
from hubops.plan.model import ContainerSpec


def inspect(host: Host, kind: str, name: str) -> dict[str, Any] | None:
    """``docker <kind> inspect`` as a dict, or None when there is no such object."""
    result = host.run(f"docker {kind} inspect {quote(name)}", check=False, timeout=60)
    if not result.ok:
        return None
    data = json.loads(result.stdout)
    return data[0] if data else None


def image_id(host: Host, ref: str) -> str | None:
    found = inspect(host, "image", ref)
    return str(found["Id"]) if found else None


def labels(container: dict[str, Any]) -> dict[str, str]:
    return dict((container.get("Config") or {}).get("Labels") or {})


def is_running(container: dict[str, Any]) -> bool:
    return bool((container.get("State") or {}).get("Running"))


def create_command(spec: ContainerSpec, extra_labels: dict[str, str]) -> str:
    """``docker create`` for a container spec of the plan."""
    head = ["docker", "create", "--name", spec.name, "--restart", spec.restart_policy]
    return quote(*head, *_options(spec, extra_labels), spec.image, *spec.command)


def run_once_command(spec: ContainerSpec) -> str:
    """``docker run --rm`` of a spec: a one-off with its rights, left nowhere afterwards."""
    return quote("docker", "run", "--rm", *_options(spec, {}), spec.image, *spec.command)


def _options(spec: ContainerSpec, extra_labels: dict[str, str]) -> list[str]:
    args = ["--network", spec.network]
    for key, value in sorted({**spec.labels, **extra_labels}.items()):
        args += ["--label", f"{key}={value}"]
    for key, value in sorted(spec.environment.items()):
        args += ["--env", f"{key}={value}"]
    if spec.ip:
        args += ["--ip", spec.ip]
    if spec.entrypoint is not None:
        args += ["--entrypoint", spec.entrypoint]
    if spec.user is not None:
        args += ["--user", spec.user]
    args += [f"--cap-drop={cap}" for cap in spec.cap_drop]
    args += [f"--cap-add={cap}" for cap in spec.cap_add]
    args += [f"--security-opt={opt}" for opt in spec.security_opt]
    if spec.pids_limit is not None:
        args += ["--pids-limit", str(spec.pids_limit)]
    if spec.read_only:
        args.append("--read-only")
    for path, options in sorted(spec.tmpfs.items()):
        args += ["--tmpfs", f"{path}:{options}" if options else path]
    for port in spec.ports:
        args += ["--publish", f"{port.host_ip}:{port.host_port}:{port.container_port}"]
    for mount in spec.mounts:
        option = f"type=bind,source={mount.source},target={mount.target}"
        args += ["--mount", option + (",readonly" if mount.read_only else "")]
    return args


def logs(host: Host, name: str, lines: int = 40) -> str:
    result = host.run(f"docker logs --tail {lines} {quote(name)} 2>&1", check=False)
    return result.stdout.strip()


def remove(host: Host, name: str) -> None:
    host.run(f"docker rm -f {quote(name)}", check=False)


@dataclass(frozen=True)
class Snapshot:
    """Files, images, containers and checksums of a host, read in one round trip."""

    files: dict[str, str | None]  # path -> text, None when missing
    images: dict[str, dict[str, Any]]  # ref -> image inspect (present ones only)
    containers: dict[str, dict[str, Any]]  # name -> container inspect (present ones only)
    sums: str  # sha256sum output of the requested paths (missing ones left out)

    def image_id(self, ref: str) -> str | None:
        found = self.images.get(ref)
        return str(found["Id"]) if found else None


_MARK = "=== hubops snapshot"


def snapshot(
    host: Host,
    read: list[str],
    images: list[str],
    containers: list[str],
    sums: list[str],
    *,
    files: Host | None,
) -> Snapshot:
    """One command on the host instead of one per question (a no-op deploy stays fast).

    ``files``: who reads the files and sums: ``host`` itself (root: one command), a root
    helper (a deploy user that is not root: a second command), or None (nobody can yet: they
    read as missing).
    """
    docker_parts = [f"echo '{_MARK} images'"]
    if images:
        docker_parts.append(f"docker image inspect {quote(*images)} 2>/dev/null")
    docker_parts.append(f"echo '{_MARK} containers'")
    if containers:
        docker_parts.append(f"docker container inspect {quote(*containers)} 2>/dev/null")
    file_parts = [f"echo '{_MARK} files'"]
    for path in read:
        p = quote(path)
        file_parts.append(
            f"if [ -f {p} ]; then echo \"F $(base64 -w0 < {p})\"; else echo 'F -'; fi"
        )
    file_parts.append(f"echo '{_MARK} sums'")
    if sums:
        file_parts.append(f"sha256sum {' '.join(sums)} 2>/dev/null")
    if files is host:
        out = host.run("; ".join(file_parts + docker_parts) + "; true", timeout=120).stdout
    else:
        out = host.run("; ".join(docker_parts) + "; true", timeout=120).stdout
        if files is not None:
            out += "\n" + files.run("; ".join(file_parts) + "; true", timeout=120).stdout
    sections: dict[str, list[str]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith(_MARK):
            current = line.removeprefix(_MARK).strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    texts = [line[2:] for line in sections.get("files", []) if line.startswith("F ")]
    if files is None:
        texts = ["-"] * len(read)
    found_files = {
        path: (None if encoded == "-" else base64.b64decode(encoded).decode())
        for path, encoded in zip(read, texts, strict=True)
    }
    found_images = _json_list(sections.get("images", []))
    by_ref: dict[str, dict[str, Any]] = {}
    for ref in images:
        for image in found_images:
            if ref in (image.get("RepoTags") or []) or ref in (image.get("RepoDigests") or []):
                by_ref[ref] = image
    found = _json_list(sections.get("containers", []))
    by_name = {str(c.get("Name", "")).lstrip("/"): c for c in found}
    return Snapshot(found_files, by_ref, by_name, "\n".join(sections.get("sums", [])))


def _json_list(lines: list[str]) -> list[dict[str, Any]]:
    text = "\n".join(lines).strip()
    if not text:
        return []
    # several arrays when docker printed one per name: join them
    return [item for chunk in json.loads("[" + text.replace("]\n[", "],[") + "]") for item in chunk]
