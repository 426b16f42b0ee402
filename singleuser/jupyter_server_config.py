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
c.ServerApp.jpserver_extensions = {
    "jupyter_lsp": False,
    "notebook_shim": False,
    # the user's GPUs and OOM kills for the status bar (singleuser/hubops_usage)
    "hubops_usage": True,
}
# A save on a full disk (or over a hard disk quota) says so, and what to do (hubops_usage).
c.ServerApp.contents_manager_class = "hubops_usage.contents.HubopsFileManager"
# The extension manager lists what the image holds; it does not search PyPI from the lab.
c.LabApp.extension_manager = "readonly"

# jupyter-resource-usage: the server's memory (its processes: kernels, terminals) against the
# container's limit (MEM_LIMIT), and CPU against CPU_LIMIT, in the status bar. Its Prometheus
# gauges would walk the process tree every second in every idle server: off. The host's own
# figures are not the user's: off.
c.ResourceUseDisplay.track_cpu_percent = True
c.ResourceUseDisplay.enable_prometheus_metrics = False
c.ResourceUseDisplay.show_host_usage = False
