"""HubopsSpawner: DockerSpawner plus GPU allocation, profiles and a per-group maximum age.

Which GPUs are held comes from the engine, not from the hub's memory: every user container
carries its GPU IDs in the label ``org.hubops.gpus``, so a hub restart or redeploy forgets
nothing. Allocation runs under one lock, from reading the holdings to creating the container
that records them, so no GPU is handed out twice however many spawns run at once.
"""

from __future__ import annotations

import asyncio
import html
import os
import time
from datetime import datetime, timezone
from typing import Any

from docker.types import DriverConfig, Mount
from dockerspawner import DockerSpawner, SwarmSpawner
from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Dict, Integer, List, Unicode

from hubops_hub import culling, diskusage, metrics, spawnline
from hubops_hub.gpumon import holder_from_labels, kinds, read_state
from hubops_hub.gpus import (
    HOLDING_STATES,
    Holding,
    NoGPUAvailable,
    Policy,
    advertised_gpus,
    allocate,
    assigned_gpus,
    free_count,
    node_schedulable,
)
from hubops_hub.labels import (
    LABEL_ENV,
    LABEL_GPU_IDLE_TIMEOUT,
    LABEL_GPUS,
    LABEL_GROUP,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_SERVER,
    LABEL_STARTED,
    LABEL_USER,
)
from hubops_hub.userdirs import USER_DIR_PREFIX, archive_user_dir

STOP_GRACE = 120  # seconds: a culled server's stop, after the cull's journal entry

_ALLOCATION_LOCK = asyncio.Lock()
metrics.register()


class GPURequestError(web.HTTPError):
    """A spawn the GPU policy refuses; its message is shown in the browser and the API."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.jupyterhub_message = message


class HubopsSpawner(DockerSpawner):  # type: ignore[misc]
    hubops_environment = Unicode(
        "", config=True, help="The hubops environment whose containers this spawner manages."
    )
    gpu_policy = Dict(
        config=True,
        help="name (none, all, exclusive, shared, pinned), pool, max_per_gpu, pinned_users, "
        "pinned_groups",
    )
    profiles = List(
        config=True,
        help="Per-group choices, first match wins: groups, images (display names), max_gpus "
        "(per user), mem_limit, cpu_limit, max_age (seconds, 0: none).",
    )
    gpu_idle_timeout = Integer(
        0,
        config=True,
        help="Seconds a GPU holder may use neither its GPU nor Jupyter before the culler stops "
        "it (gpu.idle_timeout; a profile's gpu_idle_timeout wins); 0: the culler's timeout.",
    )
    default_gpus = Integer(
        None,
        allow_none=True,
        config=True,
        help="GPUs asked for when a request names none; unset: 1 where the user's profile "
        "allows GPUs, else 0.",
    )
    user_data_dir = Unicode(
        "",
        config=True,
        help="Where the users' directories are (paths.user_data_dir, mounted at the same path "
        "in the hub): a deleted user's directory is archived there; empty: nothing archived "
        "(named volumes).",
    )
    disk_quota = Integer(
        0, config=True, help="singleuser.disk_quota in bytes (a profile's wins); 0: none."
    )
    disk_quota_mode = Unicode("auto", config=True, help="singleuser.disk_quota_mode.")
    disk_usage_every = Integer(
        600, config=True, help="Seconds between measurements (the server's own, too)."
    )
    hub_image = Unicode(
        "", config=True, help="The hub's image: hard disk quotas are set from a container of it."
    )
    queue_timeout = Integer(
        0,
        config=True,
        help="gpu.queue_timeout: seconds a spawn waits in line for its GPUs (a profile's "
        "queue_timeout wins); 0: refused at once when they are not free.",
    )
    concurrent_starts = Integer(
        0,
        config=True,
        help="hub.concurrent_starts: user containers starting at once, the others wait in "
        "line; 0: twice the host's cores.",
    )

    # --- who may do what -------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return Policy.from_dict(self.gpu_policy or {})

    def _groups(self) -> list[str]:
        return [g.name for g in getattr(self.user, "groups", [])]

    def profile(self) -> dict[str, Any]:
        """The first profile whose groups include one of the user's (or that names none)."""
        groups = set(self._groups())
        for p in self.profiles:
            wanted = set(p.get("groups") or [])
            if not wanted or wanted & groups:
                return dict(p)
        gpus = 0 if self.policy.name in ("none", "all") else 1
        return {"groups": [], "images": None, "max_gpus": gpus}

    def _get_allowed_images(self) -> Any:
        allowed = super()._get_allowed_images()
        names = self.profile().get("images")
        if names is None or not isinstance(allowed, dict) or not allowed:
            return allowed
        return {k: v for k, v in allowed.items() if k in names}

    # --- the form and user_options ---------------------------------------------------------

    async def get_options_form(self) -> str:
        images = self._get_allowed_images()
        profile = self.profile()
        parts = []
        if isinstance(images, dict) and len(images) > 1:
            options = "".join(
                f'<option value="{html.escape(name)}">{html.escape(name)}</option>'
                for name in images
            )
            parts.append(
                '<label for="image">Image</label>'
                f'<select class="form-control" name="image" id="image">{options}</select>'
            )
        max_gpus = int(profile.get("max_gpus", 0))
        if max_gpus > 0 and self.policy.name in ("exclusive", "shared", "pinned"):
            pool = await self.monitor_pool()
            if pool:  # the monitor's view: what `invoke gpus` shows, less the GPUs that
                # spawns took from the line and have not yet put on a container
                reserved = {g for h in spawnline.RESERVED.values() for g in h.gpus}
                devices = [d for d in pool["free_devices"] if d["id"] not in reserved]
                free, total = len(devices), int(pool["total"])
            else:
                (free, total), devices = await self.free_gpus(), []
            default = self._default_count()
            counts = "".join(
                f'<option value="{n}"{" selected" if n == default else ""}>{n}</option>'
                for n in range(max_gpus + 1)
            )
            status = (
                f"{free} of {total} GPUs are free right now"
                if total
                else "your GPUs are assigned to you"
            )
            waiting = len(spawnline.GPU_LINE)
            if total and self.policy.name in ("exclusive", "shared"):
                status += (
                    f"; {waiting} {'spawn waits' if waiting == 1 else 'spawns wait'} in line "
                    "for one"
                )
            parts.append(
                '<label for="gpus">GPUs</label>'
                f'<select class="form-control" name="gpus" id="gpus">{counts}</select>'
                f'<p class="help-block" id="gpus-free">{status}</p>{self._free_kinds_html(devices)}'
            )
        stopped = self._last_stop_html()
        if stopped:
            parts.insert(0, stopped)
        notice = spawnline.restart_notice(self._line_key())
        if notice:
            parts.insert(
                0,
                f'<div class="alert alert-warning" id="hubops-line-lost">{html.escape(notice)}'
                "</div>",
            )
        return "\n".join(parts)

    def _free_kinds_html(self, devices: list[dict[str, Any]]) -> str:
        """The free GPUs by kind (model, MIG profile), each by index."""
        if not devices:
            return ""
        items = "".join(
            f"<li>{html.escape(kind)}: "
            f"{html.escape(', '.join('GPU ' + str(d['index']) for d in found))}</li>"
            for kind, found in kinds(devices).items()
        )
        return f'<ul class="help-block" id="gpus-free-kinds">{items}</ul>'

    def _last_stop_html(self) -> str:
        """Why the culler stopped this server last, unless it has been used since. The stop
        itself sets the server's last activity, a few seconds after the journal's entry; any
        later activity (a start, use) is more than STOP_GRACE after it."""
        entry = culling.last_for(self.user.name, self.name or "")
        if entry is None:
            return ""
        last = getattr(self.orm_spawner, "last_activity", None) if self.orm_spawner else None
        at = float(entry.get("at", 0))
        if last is not None and last.replace(tzinfo=timezone.utc).timestamp() > at + STOP_GRACE:
            return ""
        when = datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return (
            '<div class="alert alert-warning" id="hubops-last-stop">'
            f"Your last server was stopped at {when}: {html.escape(str(entry.get('message', '')))}"
            "</div>"
        )

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:  # type: ignore[override]
        options: dict[str, Any] = {}
        if formdata.get("image"):
            options["image"] = formdata["image"][0]
        if formdata.get("gpus"):
            options["gpus"] = formdata["gpus"][0]
        return options

    def _default_count(self) -> int:
        if self.default_gpus is not None:
            return int(self.default_gpus)
        gpus = int(self.profile().get("max_gpus", 0))
        return 1 if gpus >= 1 and self.policy.name in ("exclusive", "shared", "pinned") else 0

    def _requested_gpus(self) -> int:
        value = self.user_options.get("gpus", self._default_count())
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise GPURequestError(400, f"gpus must be a whole number, got {value!r}") from None
        if count < 0:
            raise GPURequestError(400, f"gpus must be 0 or more, got {count}")
        return count

    # --- the engine's view -----------------------------------------------------------------

    async def holdings(self) -> list[Holding]:
        """Who holds which GPUs now, from the labels of this environment's containers, and the
        GPUs of the spawns that have left the GPU line and not yet created their container
        (but this server's own)."""
        containers = await self.docker(
            "containers", all=True, filters={"label": [f"{LABEL_ENV}={self.hubops_environment}"]}
        )
        out = [h for key, h in spawnline.RESERVED.items() if key != self._line_key()]
        for c in containers:
            if c.get("State") not in HOLDING_STATES:
                continue
            h = holder_from_labels(str(c.get("Id", "")), c.get("Labels") or {})
            if h is not None:
                out.append(Holding(user=h.user, server=h.server, gpus=h.gpus))
        return out

    async def free_gpus(self) -> tuple[int, int]:
        """(free, total) GPUs for this user's profile, for the spawn form."""
        return free_count(self.policy, await self.holdings())

    async def monitor_pool(self) -> dict[str, Any] | None:
        """The pool as the GPU monitor sees it (free, total, the free devices described),
        where the monitor runs and the policy has a pool; else None."""
        if not os.environ.get(metrics.MONITOR_ENV):
            return None
        state = await asyncio.get_running_loop().run_in_executor(None, read_state)
        pool = (state or {}).get("pool") or {}
        return pool if pool.get("total") else None

    # --- spawning --------------------------------------------------------------------------

    def apply_profile(self) -> dict[str, Any]:
        """The user's profile's limits on this server: memory, CPU, and /dev/shm (bytes,
        worked out from the profile's memory limit when it names no size)."""
        profile = self.profile()
        for key in ("mem_limit", "cpu_limit"):
            if profile.get(key) is not None:
                setattr(self, key, profile[key])
        if profile.get("shm_size"):
            host_config = dict(self.extra_host_config or {})
            host_config["shm_size"] = profile["shm_size"]
            self.extra_host_config = host_config
        return profile

    def _check_request(self, profile: dict[str, Any]) -> int:
        """The GPUs asked for, within what the user's profile allows."""
        count = self._requested_gpus()
        limit = int(profile.get("max_gpus", 0))
        if count > limit and self.policy.name not in ("none", "all"):
            metrics.SPAWN_FAILURES.labels("over-limit").inc()
            raise GPURequestError(
                403, f"{self.user.name} may use {limit} GPU(s) at most; asked for {count}"
            )
        return count

    async def start(self) -> Any:
        try:
            profile = self.apply_profile()
            self._gpu_count = self._check_request(profile)
            await self._disk_quota(profile)
            ip_port = await super().start()
            await self._wait_listening(*ip_port)
            return ip_port
        finally:  # ready, failed or cancelled: the next in line may start
            spawnline.STARTS.release(self._line_key())

    async def stop(self, now: bool = False) -> Any:
        """Besides DockerSpawner's stop: the GPU line looks at once (the head may now fit)."""
        try:
            return await super().stop(now=now)
        finally:
            spawnline.STARTS.release(self._line_key())
            spawnline.GPU_LINE.changed()

    # --- the lines (hubops_hub.spawnline) ----------------------------------------------------

    def _line_key(self) -> str:
        return f"{self.user.name}/{self.name}" if self.name else self.user.name

    def _queue_timeout(self, profile: dict[str, Any]) -> int:
        value = profile.get("queue_timeout")
        return int(self.queue_timeout if value is None else value)

    async def run_pre_spawn_hook(self) -> None:
        """The configured pre_spawn_hook, then the lines: for GPUs where they are not free,
        then for a start slot. JupyterHub applies no timeout here, so start_timeout counts
        from the start itself; a cancel (stopping the pending server) leaves the line."""
        await maybe_future(super().run_pre_spawn_hook())
        if self.object_type != "container":  # a swarm's services: its scheduler places them
            return
        key = self._line_key()
        future = getattr(self, "_spawn_future", None)
        if future is not None:  # whatever ends the spawn gives back what it took
            future.add_done_callback(lambda _: self._end_of_spawn(key))
        profile = self.apply_profile()
        count = self._check_request(profile)
        await self._wait_for_gpus(key, count, profile)
        spawnline.STARTS.capacity = self.concurrent_starts or spawnline.default_starts()
        spawnline.STARTS.max_hold = float(self.start_timeout + self.http_timeout + 60)
        await spawnline.STARTS.acquire(key, self.user.name)

    def clear_state(self) -> None:
        """JupyterHub clears a server's state when it stops it (and before a new spawn):
        a spawn of it that was cancelled in line was the user's cancel, not a restart's."""
        super().clear_state()
        spawnline.forget(self._line_key())

    def _end_of_spawn(self, key: str) -> None:
        spawnline.STARTS.release(key)
        if spawnline.RESERVED.pop(key, None) is not None:
            spawnline.GPU_LINE.changed()

    async def _wait_for_gpus(self, key: str, count: int, profile: dict[str, Any]) -> None:
        """Wait in line until ``count`` GPUs are free for this server, then reserve them
        (``spawnline.RESERVED``, which allocation counts until the container carries them)."""
        policy = self.policy
        timeout = self._queue_timeout(profile)
        if count <= 0 or policy.name not in ("exclusive", "shared") or timeout <= 0:
            return
        if count > len(policy.pool):
            raise GPURequestError(
                403, f"{count} GPUs asked for, and the pool has {len(policy.pool)}; ask for fewer"
            )
        ticket = spawnline.GPU_LINE.join(key, self.user.name, count)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if spawnline.GPU_LINE.first(ticket):
                    async with _ALLOCATION_LOCK:
                        holdings = await self.holdings()
                        self._check_held(holdings, count, profile)
                        try:
                            ids = allocate(policy, holdings, count, self.user.name, self._groups())
                        except NoGPUAvailable:
                            ids = None
                        if ids:
                            spawnline.RESERVED[key] = Holding(self.user.name, self.name, tuple(ids))
                            return
                left = deadline - time.monotonic()
                if left <= 0:
                    metrics.SPAWN_FAILURES.labels("queue-timeout").inc()
                    raise GPURequestError(
                        503,
                        f"no GPU came free in {timeout} s of waiting in line ({count} asked for, "
                        f"{len(policy.pool)} in the pool); try again later or start without a GPU",
                    )
                await spawnline.GPU_LINE.wait(min(left, spawnline.POLL))
        except asyncio.CancelledError:
            spawnline.GPU_LINE.leave(ticket, cancelled=True)
            raise
        finally:
            spawnline.GPU_LINE.leave(ticket)

    def _check_held(self, holdings: list[Holding], count: int, profile: dict[str, Any]) -> None:
        mine = sum(
            len(h.gpus) for h in holdings if h.user == self.user.name and h.server != self.name
        )
        limit = int(profile.get("max_gpus", 0))
        if count and mine + count > limit and self.policy.name not in ("none", "all"):
            metrics.SPAWN_FAILURES.labels("over-limit").inc()
            raise GPURequestError(
                403,
                f"{self.user.name} holds {mine} GPU(s) already and may use {limit}; "
                "stop another server first",
            )

    # --- disk quota ------------------------------------------------------------------------

    def quota_bytes(self, profile: dict[str, Any] | None = None) -> int:
        profile = self.profile() if profile is None else profile
        return int(profile.get("disk_quota") or self.disk_quota or 0)

    async def _disk_quota(self, profile: dict[str, Any]) -> None:
        """The server learns its quota (JupyterLab shows use against it); a user over it is
        told (the progress page, the log); in hard mode the filesystem is told."""
        self._disk_notice = ""
        quota = self.quota_bytes(profile)
        env = dict(self.environment or {})
        for key in ("HUBOPS_DISK_QUOTA_BYTES", "HUBOPS_DISK_USED_BYTES"):
            env.pop(key, None)
        if not self.user_data_dir:
            self.environment = env
            return
        env["HUBOPS_DISK_EVERY"] = str(self.disk_usage_every)
        loop = asyncio.get_running_loop()
        usage = await loop.run_in_executor(None, diskusage.read_usage)
        entry = ((usage or {}).get("users") or {}).get(self.user.name)
        if entry:
            env["HUBOPS_DISK_USED_BYTES"] = str(int(entry.get("bytes") or 0))
        if quota:
            env["HUBOPS_DISK_QUOTA_BYTES"] = str(quota)
        self.environment = env
        if not quota:
            return
        if entry and int(entry.get("bytes") or 0) > quota:
            self._disk_notice = diskusage.over_quota_message(int(entry["bytes"]), quota)
            self.log.warning(
                "%s starts over their disk quota: %s", self.user.name, self._disk_notice
            )
        if self.disk_quota_mode != "soft":
            await self._hard_quota(quota)

    async def _hard_quota(self, quota: int) -> None:
        """Set the user directory's project quota where the filesystem enforces it (mode hard;
        auto on such a filesystem). ``invoke deploy`` refused hard on one that cannot."""
        path = os.path.join(self.user_data_dir, USER_DIR_PREFIX + self.escape(self.user.name))
        loop = asyncio.get_running_loop()
        can = await loop.run_in_executor(None, diskusage.path_capability, self.user_data_dir)
        if diskusage.effective_mode(self.disk_quota_mode, can) != "hard" or can.mode != "hard":
            return
        project = await loop.run_in_executor(None, diskusage.project_id, os.path.basename(path))
        script = diskusage.hard_quota_script(can.fstype, path, project, quota)
        # the host's own quota tools (xfsprogs; e2fsprogs and quota on ext4, which
        # host.prepare installs), as hubops' root helper runs them: chroot into the host's
        # root; privileged, as they need the filesystem's device
        host_config = {"privileged": True, "network_mode": "none", "binds": ["/:/host"]}
        created = await self.docker(
            "create_container",
            image=self.hub_image,
            command=["/host", "/bin/sh", "-c", script],
            entrypoint=["chroot"],
            environment={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
            host_config=await self.docker("create_host_config", **host_config),
            labels={LABEL_ENV: self.hubops_environment, LABEL_ROLE: "root-helper"},
        )
        try:
            await self.docker("start", created["Id"])
            result = await self.docker("wait", created["Id"], timeout=120)
            if int(result.get("StatusCode", 1)) != 0:
                logs = await self.docker("logs", created["Id"])
                raise GPURequestError(
                    500,
                    f"could not set {self.user.name}'s disk quota: "
                    f"{logs.decode(errors='replace').strip()[-300:]}",
                )
        finally:
            await self.docker("remove_container", created["Id"], force=True)

    async def progress(self) -> Any:
        """The place in line while the spawn waits (read anew by every page that asks: a
        reload shows the same place), then the start's own events."""
        key, last = self._line_key(), None
        while (text := spawnline.status(key)) is not None:
            if text != last:
                yield {"progress": 5, "message": text}
                last = text
            await asyncio.sleep(1)
        notice = getattr(self, "_disk_notice", "")
        if notice:
            yield {"message": notice}
        async for event in super().progress():
            yield event

    async def _wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the server accepts connections, trying every 0.1 s.

        The hub's own check (jupyterhub.utils.exponential_backoff) sleeps a random 0-0.2 s,
        0-0.4 s, 0-0.8 s... between tries, so a server that is up after 1.5 s is often seen
        only at 2-3 s. Jupyter Server binds its port once its extensions are loaded, so an
        accepted connection means it is about to answer. A refused connection costs the hub
        a system call (no HTTP client, whose queue the hub's proxy calls share). The loop
        ends early when the container has stopped or http_timeout has passed; the hub's own
        check follows in every case and decides, as it does without this.
        """
        deadline = time.monotonic() + self.http_timeout
        tries = 0
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 2)
                writer.close()
                return
            except (OSError, asyncio.TimeoutError):
                pass
            tries += 1
            if tries % 20 == 0 and await self.poll() is not None:
                return
            await asyncio.sleep(0.1)

    async def create_object(self) -> Any:
        count = getattr(self, "_gpu_count", self._default_count())
        key = self._line_key()
        async with _ALLOCATION_LOCK:
            try:
                holdings = await self.holdings()
                profile = self.profile()
                self._check_held(holdings, count, profile)
                reserved = spawnline.RESERVED.get(key)
                if reserved is not None and len(reserved.gpus) == count:
                    ids: list[str] | None = list(reserved.gpus)  # from the line
                else:
                    waiting = len(spawnline.GPU_LINE)
                    if count and waiting and self.policy.name in ("exclusive", "shared"):
                        metrics.SPAWN_FAILURES.labels("empty-pool").inc()
                        raise GPURequestError(
                            503,
                            f"{waiting} {'spawn waits' if waiting == 1 else 'spawns wait'} in "
                            "line for GPUs, and they come first; try again later or start "
                            "without a GPU",
                        )
                    try:
                        ids = allocate(self.policy, holdings, count, self.user.name, self._groups())
                    except NoGPUAvailable as exc:
                        metrics.SPAWN_FAILURES.labels("empty-pool").inc()
                        raise GPURequestError(503, str(exc)) from None
                self._set_gpu_request(ids)
                return await super().create_object()
            finally:  # the container's labels hold them now, or the create failed
                if spawnline.RESERVED.pop(key, None) is not None:
                    spawnline.GPU_LINE.changed()

    async def delete_forever(self) -> None:
        """A user is deleted (admin page or API): JupyterHub has stopped their servers, so
        their GPUs are back in the pool; their directory is archived, not lost
        (``<user_data_dir>/.deleted/``, until ``invoke users.purge``). Once per user: at the
        default server's spawner."""
        await maybe_future(super().delete_forever())  # Spawner's is plain, and a no-op
        if self.name or not self.user_data_dir:
            return
        archived = await asyncio.get_running_loop().run_in_executor(
            None, archive_user_dir, self.user_data_dir, USER_DIR_PREFIX, self.user.name, time.time()
        )
        if archived:
            self.log.info(
                "%s was deleted: their directory is archived in %s", self.user.name, archived
            )

    async def remove_object(self) -> None:
        """DockerSpawner removes a container of this server's name before it creates one,
        but without force: one that still runs (a server the hub's DB does not know, after
        ``invoke db.restore``) answers 409, which DockerSpawner takes for "already removing",
        and the create then fails on the taken name (HTTP 500 at every login). Stop it first;
        the user's files are in their directory, which stays, and its GPUs go back to the
        pool with it."""
        if self.object_type == "container" and self.object_id:
            await self.stop_object()
        await super().remove_object()

    def get_env(self) -> dict[str, str]:
        """Besides the hub's variables: a server without a GPU sees none, also on a host whose
        default runtime is nvidia and from an image that says NVIDIA_VISIBLE_DEVICES=all (the
        CUDA base images do); the NVIDIA runtime then exposes no GPU at all."""
        env: dict[str, str] = super().get_env()
        return {**env, **self.gpu_env()}

    def gpu_env(self) -> dict[str, str]:
        return {"NVIDIA_VISIBLE_DEVICES": "void"} if getattr(self, "_gpu_ids", None) == [] else {}

    def _set_gpu_request(self, ids: list[str] | None) -> None:
        self._gpu_ids = ids
        if ids is None:
            requests = [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]
        elif ids:
            requests = [{"driver": "nvidia", "device_ids": ids, "capabilities": [["gpu"]]}]
        else:
            requests = []
        host_config = dict(self.extra_host_config or {})
        host_config["device_requests"] = requests
        # DockerSpawner removes the container itself when the server stops (remove=True); its
        # auto_remove on top makes dockerd delete running servers when it restarts, even with
        # live-restore (checked with Docker 20.10): a docker.io upgrade would kill them all.
        host_config["auto_remove"] = False
        self.extra_host_config = host_config
        create = dict(self.extra_create_kwargs or {})
        gpus = "all" if ids is None else ",".join(ids)
        create["labels"] = self.server_labels(create.get("labels") or {}, gpus)
        self.extra_create_kwargs = create

    def server_labels(self, labels: dict[str, str], gpus: str) -> dict[str, str]:
        """``labels`` plus who runs the server, from which image, since when, and ``gpus``
        (what it holds; none: no label, so the server holds nothing)."""
        out = {
            **labels,
            LABEL_USER: self.user.name,
            LABEL_IMAGE: self.image,
            LABEL_SERVER: self.name,
            LABEL_STARTED: str(int(time.time())),
            LABEL_GROUP: self._charged_group(),
        }
        out.pop(LABEL_GPU_IDLE_TIMEOUT, None)
        if gpus:
            out[LABEL_GPUS] = gpus
            timeout = int(self.profile().get("gpu_idle_timeout") or self.gpu_idle_timeout or 0)
            if timeout:
                out[LABEL_GPU_IDLE_TIMEOUT] = str(timeout)
        else:
            out.pop(LABEL_GPUS, None)
        return out

    def _charged_group(self) -> str:
        """The group whose profile applies (GPU-hours are charged to it): the first of the
        profile's groups that the user is in; "" for a profile for everybody."""
        mine = set(self._groups())
        return next((g for g in self.profile().get("groups") or [] if g in mine), "")

    async def poll(self) -> Any:
        """Besides DockerSpawner's check: stop a server older than its group's max_age."""
        status = await super().poll()
        max_age = int(self.profile().get("max_age") or 0)
        if status is None and max_age and self.container_id:
            started = int((await self.object_labels()).get(LABEL_STARTED, 0))
            if started and time.time() - started > max_age:
                self.log.info("%s's server is older than %ss: stopping it", self.user.name, max_age)
                await self.stop()
                return 0
        return status

    async def object_labels(self) -> dict[str, str]:
        info = await self.docker("inspect_container", self.container_id)
        return dict(info.get("Config", {}).get("Labels") or {})


class HubopsSwarmSpawner(HubopsSpawner, SwarmSpawner):  # type: ignore[misc]
    """User servers as Docker Swarm services (cluster: swarm), on the attachable overlay
    network, endpoint mode dnsrr (the hub reaches a server by its service name).

    GPUs: the nodes advertise theirs as generic resources (node-generic-resources KIND=ID);
    a server reserves ``count`` of its profile's ``gpu_kind`` and the swarm assigns them. The
    NVIDIA runtime (the nodes' default runtime, swarm-resource DOCKER_RESOURCE_GPU) exposes
    exactly the assigned devices. Who holds which GPU is read from the swarm's tasks.
    """

    def _kind(self) -> str:
        return str(self.profile().get("gpu_kind") or "gpu")

    async def holdings(self) -> list[Holding]:
        services = await self.docker(
            "services", filters={"label": f"{LABEL_ENV}={self.hubops_environment}"}
        )
        out = []
        for service in services:
            labels = service["Spec"].get("Labels") or {}
            tasks = await self.docker(
                "tasks", filters={"service": service["ID"], "desired-state": "running"}
            )
            gpus = tuple(g for t in tasks for g in assigned_gpus(t))
            if gpus:
                out.append(
                    Holding(
                        user=labels.get(LABEL_USER, "?"),
                        server=labels.get(LABEL_SERVER, ""),
                        gpus=gpus,
                    )
                )
        return out

    async def free_gpus(self) -> tuple[int, int]:
        kind = self._kind()
        nodes = await self.docker("nodes")
        advertised = {
            g for n in nodes if node_schedulable(n) for g in advertised_gpus(n).get(kind, ())
        }
        held = {g for h in await self.holdings() for g in h.gpus}
        return len(advertised - held), len(advertised)

    @property
    def mounts(self) -> list[Mount]:
        """SwarmSpawner's mounts, with named volumes (swarm.user_data: volume) as volume
        mounts made by volume_driver (SwarmSpawner mounts every source as a bind)."""
        out = []
        for source, vol in self.volume_binds.items():
            named = not source.startswith("/")
            options = {
                k: self.format_volume_name(v, self)
                for k, v in (self.volume_driver_options or {}).items()
            }
            driver = DriverConfig(name=self.volume_driver or "local", options=options or None)
            out.append(
                Mount(
                    target=vol["bind"],
                    source=source,
                    type="volume" if named else "bind",
                    read_only=vol["mode"] == "ro",
                    driver_config=driver if named else None,
                )
            )
        return out

    async def create_object(self) -> Any:
        count = getattr(self, "_gpu_count", self._default_count())
        profile = self.profile()
        kind = self._kind()
        async with _ALLOCATION_LOCK:
            holdings = await self.holdings()
            mine = sum(
                len(h.gpus) for h in holdings if h.user == self.user.name and h.server != self.name
            )
            limit = int(profile.get("max_gpus", 0))
            if count and mine + count > limit and self.policy.name != "none":
                metrics.SPAWN_FAILURES.labels("over-limit").inc()
                raise GPURequestError(
                    403,
                    f"{self.user.name} holds {mine} GPU(s) already and may use {limit}; "
                    "stop another server first",
                )
            if count and self.policy.name == "none":
                raise GPURequestError(403, "this hub hands out no GPUs (gpu.policy none)")
            if count:
                free, total = await self.free_gpus()
                if count > free:
                    metrics.SPAWN_FAILURES.labels("empty-pool").inc()
                    raise GPURequestError(
                        503,
                        f"{count} GPU(s) of kind {kind} asked for, {free} of {total} free "
                        "on the swarm's nodes right now; try fewer or later",
                    )
            self._gpu_ids = None if count else []
            resources = dict(self.extra_resources_spec or {})
            if count:
                resources["generic_resources"] = {kind: count}
            else:
                resources.pop("generic_resources", None)
            self.extra_resources_spec = resources
            labels_wanted = profile.get("node_labels") or {}
            placement = dict(self.extra_placement_spec or {})
            placement["constraints"] = [
                f"node.labels.{k}=={v}" for k, v in sorted(labels_wanted.items())
            ] or None
            self.extra_placement_spec = placement
            create = dict(self.extra_create_kwargs or {})
            container = dict(self.extra_container_spec or {})
            if "user" in create:  # per-user uids (pre_spawn_hook): the container's user
                container["user"] = create.pop("user")
            labels = self.server_labels(
                create.get("labels") or {}, f"{kind}:{count}" if count else ""
            )
            create["labels"] = labels
            container["labels"] = labels
            self.extra_create_kwargs = create
            self.extra_container_spec = container
            return await SwarmSpawner.create_object(self)

    async def start_object(self) -> None:
        """Wait until the task runs; fail at once when it was rejected or failed (SwarmSpawner
        waits through a rejection until start_timeout), and after a short grace when no node
        has the resources (the swarm would keep it pending until one frees up)."""
        grace = time.monotonic() + 10
        while True:
            task = await self.get_task()
            if not task:
                raise RuntimeError(f"service {self.service_name} has no task")
            status = task["Status"]
            state = str(status["State"]).lower()
            if state == "running":
                return
            err = str(status.get("Err") or "")
            if state in {"failed", "rejected", "shutdown", "complete", "orphaned", "remove"}:
                raise RuntimeError(
                    f"{self.user.name}'s server did not start on the swarm: {state}: "
                    f"{err or status.get('Message', '')}"
                )
            if state == "pending" and err and time.monotonic() > grace:
                raise GPURequestError(
                    503, f"no node of the swarm can run {self.user.name}'s server now: {err}"
                )
            await asyncio.sleep(0.2)

    async def object_labels(self) -> dict[str, str]:
        service = await self.get_object()
        return dict(((service or {}).get("Spec") or {}).get("Labels") or {})
