"""Who does root's file work on a hub host: the host itself, or a helper container of the
hubops image for a deploy user that is not root (:mod:`hubops.host.rootfiles`)."""

from __future__ import annotations

from hubops.host import docker as dockerhost
from hubops.host.base import Host
from hubops.host.rootfiles import root_files
from hubops.plan.model import Plan


def file_host(host: Host, plan: Plan) -> Host | None:
    """Who does root's file work on ``host`` (see hubops.host.rootfiles); None: nobody can yet (a
    deploy user that is not root, and no hubops image on the host)."""

    def candidates() -> list[str]:
        running = dockerhost.inspect(host, "container", plan.container("hub").name)
        return [*plan.helper_images, *([str(running["Image"])] if running else [])]

    return root_files(host, candidates)
