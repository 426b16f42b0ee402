#!/usr/bin/env python3
"""SIMULATED nvidia-container-runtime (hubops tests only).

The real one is an OCI runtime that wraps runc: on ``create`` it adds the
nvidia-container-runtime-hook as a prestart hook to the bundle's config.json, then runs runc.
A swarm GPU node needs it as Docker's default runtime, because a swarm task has no device
request (its GPUs come from node-generic-resources, in DOCKER_RESOURCE_<KIND>). This one does
the same with the simulated hook next to it.
"""

import json
import os
import sys

HOOK = "@HOOK@"


def main():
    args = sys.argv[1:]
    if "create" in args and "--bundle" in args:
        bundle = args[args.index("--bundle") + 1]
        path = os.path.join(bundle, "config.json")
        with open(path) as f:
            config = json.load(f)
        hooks = config.setdefault("hooks", {}).setdefault("prestart", [])
        if not any(h.get("path") == HOOK for h in hooks):
            hooks.append({"path": HOOK, "args": ["nvidia-container-runtime-hook", "prestart"]})
        with open(path, "w") as f:
            json.dump(config, f)
    os.execvp("runc", ["runc", *args])


if __name__ == "__main__":
    main()
