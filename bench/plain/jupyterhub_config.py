# The hand-made hub config: shared-password login, DockerSpawner with its defaults, the proxy
# started by the hub inside its own container. The bench passes its values as BENCH_*.
import os

c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ["BENCH_PASSWORD"]
c.SharedPasswordAuthenticator.admin_password = os.environ["BENCH_ADMIN_PASSWORD"]
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "docker"
c.DockerSpawner.image = os.environ["BENCH_SINGLEUSER_IMAGE"]
c.DockerSpawner.network_name = os.environ["BENCH_NETWORK"]
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = os.environ["BENCH_HUB_NAME"]
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/data/jupyterhub_cookie_secret"
# Only for the "plain, hubops' timeouts" run: JupyterHub's defaults (start 60 s, HTTP 30 s)
# fail every login of a large class on this machine.
if os.environ.get("BENCH_TIMEOUT"):
    c.Spawner.start_timeout = c.Spawner.http_timeout = int(os.environ["BENCH_TIMEOUT"])
