#!/usr/bin/env python3
"""SIMULATED nvidia-container-runtime-hook (hubops tests only).

Called by the container runtime as ``nvidia-container-runtime-hook prestart`` with the OCI
state on stdin. Writes /usr/bin/nvidia-smi into the container: it lists the devices that
NVIDIA_VISIBLE_DEVICES selects from the fake inventory (-L), and answers the query interface
(--query-gpu, --query-compute-apps, as the host's SIMULATED nvidia-smi does) for those GPUs
from usage.json next to the inventory as it is when the container is created: the real hook
mounts the host's nvidia-smi and NVML, which answer live, so a long-running container here
sees the usage of its start (hubops' GPU probe is a new container for every sample).
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


QUERY = r"""
import json, sys
DATA = json.loads(%r)
def fields(option):
    for a in sys.argv[1:]:
        if a.startswith(option + "="):
            return a.split("=", 1)[1].split(",")
    return None
def show(rows, wanted):
    for row in rows:
        print(", ".join(str(row[w]) for w in wanted))
if fields("--query-gpu"):
    show(DATA["gpus"], fields("--query-gpu"))
elif fields("--query-compute-apps"):
    show(DATA["apps"], fields("--query-compute-apps"))
"""
TOTAL_MIB = 81559


def query_data(devices, usage):
    """The rows the query interface prints for the visible devices' GPUs."""
    gpus, seen = [], set()
    for gpu, _ in devices:
        if gpu["uuid"] in seen:
            continue
        seen.add(gpu["uuid"])
        u = usage.get("gpus", {}).get(gpu["uuid"], {})
        gpus.append(
            {
                "index": gpu["index"],
                "uuid": gpu["uuid"],
                "name": "hubops SIMULATED GPU",
                "utilization.gpu": u.get("util", 0),
                "memory.used": u.get("mem", 0),
                "memory.total": TOTAL_MIB,
                "driver_version": "550.54.15",
            }
        )
    apps = [
        {
            "gpu_uuid": a["gpu_uuid"],
            "pid": a["pid"],
            "used_memory": a["used_memory"],
            "process_name": a.get("process_name", "python3"),
        }
        for a in usage.get("apps", [])
        if a["gpu_uuid"] in seen
    ]
    return {"gpus": gpus, "apps": apps}


def read_usage():
    try:
        with open(os.path.join(os.path.dirname(INVENTORY), "usage.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def script(devices):
    lines = []
    for n, (gpu, mig) in enumerate(devices):
        if mig is None:  # a whole GPU: in MIG mode, -L lists its MIG devices under it
            lines.append(f"GPU {n}: hubops SIMULATED GPU (UUID: {gpu['uuid']})")
            for m, uuid in enumerate(gpu["mig"]):
                lines.append(f"  MIG 1g.10gb     Device  {m}: (UUID: {uuid})")
        else:
            lines.append(f"GPU {n}: hubops SIMULATED GPU (UUID: {gpu['uuid']})")
            lines.append(f"  MIG 1g.10gb     Device  {gpu['mig'].index(mig)}: (UUID: {mig})")
    listing = "\n".join(lines)
    return (
        "#!/bin/sh\n# hubops SIMULATED nvidia-smi, written by the test hook\n"
        'if [ "$1" = "-L" ]; then\n'
        f"cat <<'EOF'\n{listing}\nEOF\n"
        'elif [ "${1#--query}" != "$1" ]; then\n'
        'exec python3 /usr/share/hubops-gpusim/query.py "$@"\n'
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
    # as the toolkit: nvidia-smi and NVML come with the capability utility (the default when
    # NVIDIA_DRIVER_CAPABILITIES is empty or unset), or all
    caps = (env.get("NVIDIA_DRIVER_CAPABILITIES") or "utility").split(",")
    if "utility" not in caps and "all" not in caps:
        return 0
    with open(INVENTORY) as f:
        gpus = json.load(f)
    target = os.path.join(root, "usr", "bin", "nvidia-smi")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    devices = visible(env, gpus)
    with open(target, "w") as f:
        f.write(script(devices))
    os.chmod(target, 0o755)
    query = os.path.join(root, "usr", "share", "hubops-gpusim", "query.py")
    os.makedirs(os.path.dirname(query), exist_ok=True)
    with open(query, "w") as f:
        f.write(QUERY % json.dumps(query_data(devices, read_usage())))
    os.chmod(query, 0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main())
