"""``invoke base-image``: a minimal Debian or Ubuntu base image made without any registry.

mmdebstrap bootstraps the release from a (configurable) mirror into a tarball, which is
imported into Docker. Labs where Docker Hub is blocked or slow, air-gapped sites and this
repo's CI (which can pull nothing) use it as the FROM image of every hubops image.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker

from hubops.config.settings import BootstrapSettings, MirrorSettings
from hubops.errors import CommandError, HubopsError
from hubops.host.base import quote
from hubops.host.local import LocalHost

DEFAULTS = {
    "debian": {
        "mirror": "http://deb.debian.org/debian",
        "security": "http://deb.debian.org/debian-security",
        "components": "main",
        "keyring_package": "debian-archive-keyring",
        "keyring": "",
    },
    "ubuntu": {
        "mirror": "http://archive.ubuntu.com/ubuntu",
        "security": "http://security.ubuntu.com/ubuntu",
        "components": "main universe",
        "keyring_package": "ubuntu-keyring",
        "keyring": "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
    },
}
# Keep the image small: no docs, man pages or translations.
DPKG_EXCLUDES = [
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
]


@dataclass(frozen=True)
class BaseImage:
    ref: str
    image_id: str
    size: int
    seconds: float


def sources(boot: BootstrapSettings, mirrors: MirrorSettings) -> list[str]:
    d = DEFAULTS[boot.distribution]
    mirror = mirrors.apt or d["mirror"]
    security = mirrors.apt_security or d["security"]
    comps = d["components"]
    return [
        f"deb {mirror} {boot.suite} {comps}",
        f"deb {mirror} {boot.suite}-updates {comps}",
        f"deb {security} {boot.suite}-security {comps}",
    ]


def bootstrap(
    client: docker.DockerClient, boot: BootstrapSettings, mirrors: MirrorSettings
) -> BaseImage:
    """Make ``boot.image`` with mmdebstrap (installed from Debian when missing)."""
    host = LocalHost()
    start = time.monotonic()
    d = DEFAULTS[boot.distribution]
    if not host.run("command -v mmdebstrap", check=False).ok:
        _apt_install(host, "mmdebstrap")
    if d["keyring"] and not Path(d["keyring"]).exists():
        _apt_install(host, d["keyring_package"])
    with tempfile.TemporaryDirectory(prefix="hubops-base-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        args = [
            "mmdebstrap",
            "--variant=minbase",
            "--quiet",
            f"--components={d['components'].replace(' ', ',')}",
            '--aptopt=Acquire::Retries "3"',
            *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
        ]
        if d["keyring"]:
            args.append(f"--keyring={d['keyring']}")
        args += [boot.suite, str(tarball), *sources(boot, mirrors)]
        try:
            host.run(quote(*args), timeout=1800)
        except CommandError as exc:
            raise HubopsError(
                f"bootstrapping {boot.distribution} {boot.suite} failed; check build.bootstrap "
                f"and mirrors.apt (is the mirror reachable from this machine?)\n{exc}"
            ) from None
        repository, _, tag = boot.image.rpartition(":")
        client.api.import_image_from_file(
            str(tarball),
            repository=repository,
            tag=tag,
            changes=[
                'CMD ["/bin/bash"]',
                f'LABEL org.hubops.bootstrap="{boot.distribution} {boot.suite}"',
            ],
        )
    image = client.images.get(boot.image)
    return BaseImage(
        ref=boot.image,
        image_id=image.id or "",
        size=int(image.attrs.get("Size", 0)),
        seconds=time.monotonic() - start,
    )


def _apt_install(host: LocalHost, package: str) -> None:
    if host.run("id -u").stdout.strip() != "0":
        raise HubopsError(
            f"{package} is missing and only root can install it: apt-get install -y {package}"
        )
    host.run(
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
        f"apt-get install -y -q --no-install-recommends {package}",
        timeout=900,
    )
