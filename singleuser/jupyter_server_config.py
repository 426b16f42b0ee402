# Server-wide defaults of the hubops singleuser image (/etc/jupyter/jupyter_server_config.py).
c = get_config()  # noqa: F821

# JupyterLab is the default UI.
c.ServerApp.default_url = "/lab"
# No calls home from a lab's server.
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None

# Start-up time and memory are per user, so server extensions that do nothing here stay off:
# jupyter_lsp needs language servers (none are installed) and notebook_shim serves classic
# notebook extensions (none are installed). Users add them back in ~/.jupyter if they do.
c.ServerApp.jpserver_extensions = {"jupyter_lsp": False, "notebook_shim": False}
# The extension manager lists what the image holds; it does not search PyPI from the lab.
c.LabApp.extension_manager = "readonly"
