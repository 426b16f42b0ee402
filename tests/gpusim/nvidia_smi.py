#!/usr/bin/env python3
"""SIMULATED nvidia-smi of the simulated GPU host itself (hubops tests only).

Besides -L and the driver version, it answers nvidia-smi's query interface the way the real
one prints it with --format=csv,noheader,nounits (fields in the order asked, ", " between):
--query-gpu=index,uuid,name,utilization.gpu,memory.used,memory.total and
--query-compute-apps=gpu_uuid,pid,used_memory,process_name. Utilisation, memory and the
processes on each GPU come from usage.json next to the inventory, which a test writes (no
file: idle GPUs, no processes). PIDs are host PIDs, as the real one reports on the host.
"""

import json
import os
import sys

with open("@INVENTORY@") as f:
    GPUS = json.load(f)
USAGE = os.path.join(os.path.dirname("@INVENTORY@"), "usage.json")
TOTAL_MIB = 81559


def usage():
    try:
        with open(USAGE) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"gpus": {}, "apps": []}


def fields(args, option):
    for a in args:
        if a.startswith(option + "="):
            return a.split("=", 1)[1].split(",")
    return None


def gpu_rows(wanted):
    state = usage()["gpus"]
    for g in GPUS:
        u = state.get(g["uuid"], {})
        values = {
            "index": g["index"],
            "uuid": g["uuid"],
            "name": "hubops SIMULATED GPU",
            "utilization.gpu": u.get("util", 0),
            "memory.used": u.get("mem", 0),
            "memory.total": TOTAL_MIB,
            "driver_version": "550.54.15",
        }
        print(", ".join(str(values[w]) for w in wanted))


def app_rows(wanted):
    for app in usage()["apps"]:
        values = {
            "gpu_uuid": app["gpu_uuid"],
            "pid": app["pid"],
            "used_memory": app["used_memory"],
            "process_name": app.get("process_name", "python3"),
        }
        print(", ".join(str(values[w]) for w in wanted))


args = sys.argv[1:]
if args[:1] == ["-L"]:
    for g in GPUS:
        print(f"GPU {g['index']}: hubops SIMULATED GPU (UUID: {g['uuid']})")
        for m, mig in enumerate(g["mig"]):
            print(f"  MIG 1g.10gb     Device  {m}: (UUID: {mig})")
elif fields(args, "--query-gpu"):
    gpu_rows(fields(args, "--query-gpu"))
elif fields(args, "--query-compute-apps"):
    app_rows(fields(args, "--query-compute-apps"))
else:
    print(
        "NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4 (hubops SIMULATED)"
    )
