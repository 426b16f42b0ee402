"""hubops tasks (`invoke --list`). This file only assembles the collection.

The tasks live in hubops/cli/; the logic they call lives in the typed modules of hubops/.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection

from hubops.cli import config, deploy, images, ops

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
    ops.doctor,
    ops.gpus,
    ops.status,
    ops.logs,
)
ns.add_collection(Collection("host", prepare=ops.host_prepare))
ns.add_collection(Collection("db", backup=ops.db_backup, restore=ops.db_restore))
ns.add_collection(Collection("tls", reload=ops.tls_reload))
ns.add_collection(Collection("swarm", migrate=ops.swarm_migrate))
ns.add_collection(Collection("users", purge=ops.users_purge))
ns.add_collection(Collection("data", backup=ops.data_backup, restore=ops.data_restore))
ns.configure({"hubops": {"root": str(Path(__file__).resolve().parent)}})
