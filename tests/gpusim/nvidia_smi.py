#!/usr/bin/env python3
"""SIMULATED nvidia-smi of the simulated GPU host itself (hubops tests only)."""

import json
import sys

with open("@INVENTORY@") as f:
    GPUS = json.load(f)

args = sys.argv[1:]
if args[:1] == ["-L"]:
    for g in GPUS:
        print(f"GPU {g['index']}: hubops SIMULATED GPU (UUID: {g['uuid']})")
        for m, mig in enumerate(g["mig"]):
            print(f"  MIG 1g.10gb     Device  {m}: (UUID: {mig})")
elif any(a.startswith("--query-gpu=driver_version") for a in args):
    for _ in GPUS:
        print("550.54.15")
else:
    print(
        "NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4 (hubops SIMULATED)"
    )
