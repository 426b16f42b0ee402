"""hubops tasks (`invoke --list`). This file only assembles the collection.

The tasks live in hubops/cli/; the logic they call lives in the typed modules of hubops/.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection

from hubops.cli import config, deploy, images

ns = Collection(
    config.envs,
    config.check,
    config.render,
    config.docs,
    images.base_image_,
    images.build,
    images.push,
    deploy.deploy,
    deploy.up,
    deploy.doctor,
    deploy.gpus,
    deploy.status,
    deploy.logs,
)
ns.add_collection(Collection("host", prepare=deploy.host_prepare))
ns.add_collection(Collection("db", backup=deploy.db_backup, restore=deploy.db_restore))
ns.add_collection(Collection("tls", reload=deploy.tls_reload))
ns.add_collection(Collection("swarm", migrate=deploy.swarm_migrate))
ns.configure({"hubops": {"root": str(Path(__file__).resolve().parent)}})
