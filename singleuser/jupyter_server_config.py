# Server-wide defaults of the hubops singleuser image (/etc/jupyter/jupyter_server_config.py).
c = get_config()  # noqa: F821

# JupyterLab is the default UI.
c.ServerApp.default_url = "/lab"
# No calls home from a lab's server.
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None
