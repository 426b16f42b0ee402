#!/usr/bin/env python3
"""SIMULATED nvidia-container-runtime-hook (hubops tests only).

Called by the container runtime as ``nvidia-container-runtime-hook prestart`` with the OCI
state on stdin. Writes /usr/bin/nvidia-smi into the container: it lists the devices that
NVIDIA_VISIBLE_DEVICES selects from the fake inventory.
"""

import json
import os
import sys

INVENTORY = "@INVENTORY@"


# As the NVIDIA Container Toolkit with `swarm-resource = "DOCKER_RESOURCE_GPU"` in its
# config.toml (what `invoke host.prepare` sets on a swarm GPU node): the GPUs a swarm task was
# assigned (node-generic-resources) come first, before NVIDIA_VISIBLE_DEVICES.
SWARM_RESOURCE = "DOCKER_RESOURCE_GPU"


def visible(env, gpus):
    value = env.get(SWARM_RESOURCE) or env.get("NVIDIA_VISIBLE_DEVICES", "")
    if value in ("", "void", "none"):
        return []
    if value == "all":
        return [(g, None) for g in gpus]
    out = []
    for item in value.split(","):
        item = item.strip()
        for g in gpus:
            if item == str(g["index"]) or item == g["uuid"]:
                out.append((g, None))
            elif item in g["mig"]:
                out.append((g, item))
    return out


def script(devices):
    lines = []
    for n, (gpu, mig) in enumerate(devices):
        if mig is None:
            lines.append(f"GPU {n}: hubops SIMULATED GPU (UUID: {gpu['uuid']})")
        else:
            lines.append(f"GPU {n}: hubops SIMULATED GPU (UUID: {gpu['uuid']})")
            lines.append(f"  MIG 1g.10gb     Device  {gpu['mig'].index(mig)}: (UUID: {mig})")
    listing = "\n".join(lines)
    return (
        "#!/bin/sh\n# hubops SIMULATED nvidia-smi, written by the test hook\n"
        'if [ "$1" = "-L" ]; then\n'
        f"cat <<'EOF'\n{listing}\nEOF\n"
        "else\n"
        "echo 'NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4 "
        "(hubops SIMULATED)'\n"
        f"cat <<'EOF'\n{listing}\nEOF\n"
        "fi\n"
    )


def main():
    if len(sys.argv) < 2 or sys.argv[1] != "prestart":
        return 0
    state = json.load(sys.stdin)
    bundle = state["bundle"]
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    root = config["root"]["path"]
    if not os.path.isabs(root):
        root = os.path.join(bundle, root)
    env = dict(e.split("=", 1) for e in config.get("process", {}).get("env", []) if "=" in e)
    with open(INVENTORY) as f:
        gpus = json.load(f)
    target = os.path.join(root, "usr", "bin", "nvidia-smi")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        f.write(script(visible(env, gpus)))
    os.chmod(target, 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main())
