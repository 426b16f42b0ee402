"""Code that runs inside the hub: installed into the hub image, imported by the rendered
jupyterhub_config.py. It needs nothing but JupyterHub and DockerSpawner.
"""

from __future__ import annotations

from hubops_hub.userdirs import escape_username, make_user_dir

__all__ = ["escape_username", "make_user_dir"]
