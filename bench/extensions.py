"""What each server extension of the singleuser image costs every user at every start.

The image's JupyterLab server is started as a user's is (``python -s``, the image's config), once
with all of its extensions and once with each hubops adds turned off; for each, the time from
``docker run`` until ``/api/status`` answers and the container's memory once idle, after one
poll of each status bar item (what an open tab does first). The median of ``runs`` starts.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import docker
import requests

from bench.measure import rss_mib

# what the image's config turns off, repeated because a command-line dict replaces it
OFF = ("jupyter_lsp", "notebook_shim")
ADDED = ("jupyter_resource_usage", "hubops_usage")
TOKEN = "bench"


def _start(client: docker.DockerClient, image: str, off: tuple[str, ...]) -> tuple[Any, float]:
    flags = [f"--ServerApp.jpserver_extensions={name}=False" for name in (*OFF, *off)]
    start = time.monotonic()
    container = client.containers.run(
        image,
        entrypoint=["python3", "-s", "-m", "jupyterlab"],
        command=["--ip=0.0.0.0", "--port=8888", f"--ServerApp.token={TOKEN}", *flags],
        name=f"hubops-bench-ext-{uuid.uuid4().hex[:6]}",
        ports={"8888/tcp": ("127.0.0.1", None)},
        mem_limit="2g",
        environment={"MEM_LIMIT": str(2 << 30)},
        detach=True,
        labels={"org.hubops.role": "bench"},
    )
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["8888/tcp"][0]["HostPort"]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/api/status?token={TOKEN}", timeout=1).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            logs = container.logs().decode(errors="replace")[-800:]
            container.remove(force=True)
            raise RuntimeError(f"the server did not answer in 60 s:\n{logs}")
        time.sleep(0.05)
    ready = time.monotonic() - start
    for path in ("api/metrics/v1", "api/hubops/usage"):
        requests.get(f"{url}/{path}?token={TOKEN}&no_track_activity=1", timeout=10)
    return container, ready


def costs(
    client: docker.DockerClient, image: str, runs: int = 3, settle_s: float = 10
) -> dict[str, Any]:
    """Start time and idle memory: all extensions, and without each that hubops adds."""
    variants: dict[str, tuple[str, ...]] = {"all": (), "none of them": ADDED}
    variants.update({f"without {name}": (name,) for name in ADDED})
    out: dict[str, Any] = {}
    for label, off in variants.items():
        ready, mib = [], []
        for _ in range(runs):
            container, seconds = _start(client, image, off)
            try:
                time.sleep(settle_s)
                ready.append(seconds)
                mib.append(rss_mib(client, container.name))
            finally:
                container.remove(force=True)
        out[label] = {"ready_s": statistics.median(ready), "idle_mib": statistics.median(mib)}
        print(
            f"extensions, {label}: ready {out[label]['ready_s']:.2f} s, idle "
            f"{out[label]['idle_mib']:.1f} MiB",
            flush=True,
        )
    return out
