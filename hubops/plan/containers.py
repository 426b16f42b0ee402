"""Settings -> what the hub host runs (:class:`~hubops.plan.model.Plan`): the proxy and hub
container specs, the host directories, the images and the generated secrets."""

from __future__ import annotations

from collections.abc import Mapping

from hubops_hub.labels import LABEL_ENV, LABEL_IMAGE, LABEL_ROLE

from hubops.config.secrets import (
    COOKIE_SECRET,
    METRICS_TOKEN,
    OPS_TOKEN,
    PROXY_TOKEN,
    hub_secrets,
)
from hubops.config.settings import Environment
from hubops.images import table as images
from hubops.plan.hub_config import gpu_monitor
from hubops.plan.model import (
    CONFIG_FILE,
    COOKIE_SECRET_FILE,
    DOCKER_SOCKET,
    HUB_CAPS,
    HUB_CONFIG_DIR,
    HUB_DATA_DIR,
    HUB_PIDS_LIMIT,
    HUB_PORT,
    HUB_SECRETS_DIR,
    NO_NEW_PRIVILEGES,
    OAUTH_CA_FILE,
    PROXY_API_PORT,
    PROXY_CAPS,
    PROXY_PIDS_LIMIT,
    PROXY_PORT,
    PROXY_REDIRECT_PORT,
    PROXY_TLS_DIR,
    PROXY_TLS_SOURCE,
    ContainerSpec,
    Digests,
    HostDir,
    Mount,
    Plan,
    PortBinding,
)
from hubops.plan.refs import hub_image, names, singleuser_choices


def _oauth_ca_mount(settings: Environment) -> list[Mount]:
    ca = getattr(settings.auth, "ca_bundle", None)
    return [Mount(source=ca, target=OAUTH_CA_FILE)] if ca is not None else []


def plan(
    env_name: str, settings: Environment, revs: Mapping[str, str], digests: Digests = None
) -> Plan:
    """What the host runs. ``digests`` (tag -> digest, from `invoke push`) pins every image to
    exactly what the registry verified."""
    n = names(env_name)
    paths = settings.paths
    registry = settings.registry.url
    proxy_image = images.by_digest(images.pinned_ref(registry, "proxy", revs["proxy"]), digests)
    hub_ref = hub_image(settings, revs, digests)
    labels = {LABEL_ENV: env_name}

    proxy_cmd = [
        "configurable-http-proxy",
        "--ip=0.0.0.0",
        f"--port={PROXY_PORT}",
        "--api-ip=0.0.0.0",
        f"--api-port={PROXY_API_PORT}",
        f"--default-target=http://{n['hub']}:{HUB_PORT}",
        f"--error-target=http://{n['hub']}:{HUB_PORT}/hub/error",
    ]
    proxy_mounts = [
        Mount(
            source=f"{paths.data_dir}/secrets/{PROXY_TOKEN.name}",
            target=f"{HUB_SECRETS_DIR}/{PROXY_TOKEN.name}",
        )
    ]
    ports = [
        PortBinding(
            container_port=PROXY_PORT,
            host_ip=settings.hub.bind_address,
            host_port=settings.hub.port,
        )
    ]
    tls = settings.tls
    proxy_env: dict[str, str] = {}
    if tls.enabled:
        assert tls.cert is not None
        assert tls.key is not None
        proxy_mounts += [
            Mount(source=tls.cert, target=f"{PROXY_TLS_SOURCE}/cert.pem"),
            Mount(source=tls.key, target=f"{PROXY_TLS_SOURCE}/key.pem"),
        ]
        proxy_env = {"HUBOPS_TLS_SOURCE": PROXY_TLS_SOURCE, "HUBOPS_TLS_DIR": PROXY_TLS_DIR}
        proxy_cmd += [f"--ssl-cert={PROXY_TLS_DIR}/cert.pem", f"--ssl-key={PROXY_TLS_DIR}/key.pem"]
        if settings.hub.http_port is not None:
            proxy_cmd += [
                f"--redirect-port={PROXY_REDIRECT_PORT}",
                f"--redirect-to={settings.hub.port}",
            ]
            ports.append(
                PortBinding(
                    container_port=PROXY_REDIRECT_PORT,
                    host_ip=settings.hub.bind_address,
                    host_port=settings.hub.http_port,
                )
            )
    proxy = ContainerSpec(
        role="proxy",
        name=n["proxy"],
        image=proxy_image,
        command=proxy_cmd,
        environment={
            "CONFIGPROXY_AUTH_TOKEN_FILE": f"{HUB_SECRETS_DIR}/{PROXY_TOKEN.name}",
            **proxy_env,
        },
        ports=ports,
        mounts=proxy_mounts,
        network=n["network"],
        labels={**labels, LABEL_ROLE: "proxy", LABEL_IMAGE: proxy_image},
        cap_drop=["ALL"],
        cap_add=PROXY_CAPS,
        security_opt=NO_NEW_PRIVILEGES,
        pids_limit=PROXY_PIDS_LIMIT,
        read_only=True,
        tmpfs={PROXY_TLS_DIR: "size=1m,mode=0700", "/tmp": "size=16m,mode=1777"},
    )
    hub = ContainerSpec(
        role="hub",
        name=n["hub"],
        image=hub_ref,
        command=["jupyterhub", "-f", f"{HUB_CONFIG_DIR}/{CONFIG_FILE}"],
        # hubops_hub.metrics.MONITOR_ENV: the hub's metrics and spawn form read the monitor
        environment={"HUBOPS_GPU_MONITOR": "1"} if gpu_monitor(settings) else {},
        ports=[],
        mounts=[
            Mount(source=paths.docker_socket, target=DOCKER_SOCKET, read_only=False),
            Mount(source=paths.config_dir, target=HUB_CONFIG_DIR),
            Mount(source=paths.data_dir, target=HUB_DATA_DIR, read_only=False),
            Mount(source=paths.user_data_dir, target=paths.user_data_dir, read_only=False),
            *_oauth_ca_mount(settings),
        ],
        network=n["network"],
        labels={**labels, LABEL_ROLE: "hub", LABEL_IMAGE: hub_ref},
        cap_drop=["ALL"],
        cap_add=HUB_CAPS,
        security_opt=NO_NEW_PRIVILEGES,
        pids_limit=HUB_PIDS_LIMIT,
        read_only=True,
        tmpfs={"/tmp": "size=64m,mode=1777"},
    )
    host_dirs = [
        HostDir(path=paths.config_dir, mode=0o755),
        HostDir(path=paths.data_dir, mode=0o700),
        HostDir(path=f"{paths.data_dir}/secrets", mode=0o700),
        HostDir(path=paths.user_data_dir, mode=0o755),
    ]
    return Plan(
        environment=env_name,
        revisions=dict(revs),
        public_url=settings.public_url,
        network=n["network"],
        images=[
            proxy_image,
            hub_ref,
            *dict.fromkeys(singleuser_choices(settings, revs, digests).values()),
        ],
        host_dirs=host_dirs,
        hub_secrets=[s.name for s in hub_secrets(settings)],
        generated_secrets={
            COOKIE_SECRET.name: f"{paths.data_dir}/{COOKIE_SECRET_FILE}",
            PROXY_TOKEN.name: f"{paths.data_dir}/secrets/{PROXY_TOKEN.name}",
            METRICS_TOKEN.name: f"{paths.data_dir}/secrets/{METRICS_TOKEN.name}",
            OPS_TOKEN.name: f"{paths.data_dir}/secrets/{OPS_TOKEN.name}",
        },
        containers=[proxy, hub],
    )
