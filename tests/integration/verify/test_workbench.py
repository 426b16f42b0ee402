"""The researcher's workbench, driven the way a user drives it: JupyterLab's terminal and
notebook kernels over their websockets, restarts through the hub's API, and a redeploy with a
rebuilt singleuser image. bob is the user here (the tests leave his server running, and take
back the one package that breaks things).

What a user expects: the terminal's python, pip and jupyter are the kernel's; `pip install`
and `%pip install` work without root and stay; the whole home (dotfiles, JupyterLab's settings,
registered kernels, shell history) stays; a package of their own that breaks jupyter_server
does not stop JupyterLab from starting; the status bar's figures are theirs (its rendering is
test_browser's), and its polls do not keep an idle server alive.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from typing import Any

import pytest

from tests.support.jupyter import hit_the_memory_limit, kernel, terminal, upload
from tests.support.verify import LoggedIn, Target
from tests.support.wheels import wheel

USER = "bob"
PROBE = wheel("hubops-probe", "1.0", {"hubops_probe/__init__.py": "WHERE = 'terminal'\n"})
NOTEBOOK_PROBE = wheel(
    "hubops-notebook-probe", "2.0", {"hubops_notebook_probe/__init__.py": "WHERE = 'notebook'\n"}
)
BROKEN_SERVER = wheel(
    "jupyter_server",
    "99.0",
    {"jupyter_server/__init__.py": "raise ImportError('a jupyter_server that does not work')\n"},
)
IMPORT_BOTH = (
    "import hubops_probe, hubops_notebook_probe\n"
    "print('FILES', hubops_probe.__file__, hubops_notebook_probe.__file__)"
)


@pytest.fixture
def user(bob: LoggedIn) -> LoggedIn:
    """The user of these tests."""
    return bob


def user_dir(target: Target) -> str:
    return f"{target.env.settings.paths.user_data_dir}/jupyterhub-user-{USER}"


def restart(user: LoggedIn) -> None:
    """Stop and start the server through the hub's REST API, as the hub's home page does."""
    user.client.stop_server(USER)
    user.client.start_server(USER)


def values(text: str) -> dict[str, str]:
    """KEY=value lines of a terminal's output."""
    return dict(m.groups() for m in re.finditer(r"^([A-Z0-9_]+)=(.*)$", text, re.M))


def test_the_terminal_is_a_login_shell_with_the_kernels_python(
    target: Target, user: LoggedIn
) -> None:
    home = target.env.settings.singleuser.notebook_dir
    with terminal(user.client, USER) as term:
        out = values(
            term.run(
                "shopt -q login_shell && echo LOGIN=yes; echo HOME=$HOME; "
                "for c in python python3 pip jupyter; do echo ${c^^}=$(command -v $c); done; "
                "echo EXE=$(python -c 'import sys, os; print(os.path.realpath(sys.executable))'); "
                "echo PIP_PYTHON=$(pip --version | sed 's/.*(python \\(.*\\))/\\1/'); "
                "jupyter lab --version >/dev/null && echo LAB=ok"
            )
        )
    with kernel(user.client, USER) as k:
        result = k.execute(
            "import os, sys; print(os.path.realpath(sys.executable)); "
            "print('%d.%d' % sys.version_info[:2])"
        )
    kernel_exe, kernel_version = result.stdout.split()
    assert out.get("LOGIN") == "yes", f"the terminal's bash is not a login shell: {out}"
    assert out["HOME"] == home, f"HOME is {out['HOME']}, not the user's directory {home}"
    for command in ("PYTHON", "PYTHON3", "PIP", "JUPYTER"):
        assert out.get(command), f"{command.lower()}: command not found in the terminal ({out})"
    assert out["EXE"] == kernel_exe, f"terminal's python {out['EXE']}, kernel's {kernel_exe}"
    assert out["PIP_PYTHON"] == kernel_version, f"pip is for Python {out['PIP_PYTHON']}"
    assert out.get("LAB") == "ok", "jupyter lab does not run in the terminal"


def install_both(user: LoggedIn) -> None:
    """pip in the terminal and %pip in a notebook, as the user: no root, and no index (the
    wheels are uploaded through JupyterLab, as a user uploads a file). --force-reinstall: an
    earlier test of this module may have installed them already."""
    for name, data in (PROBE, NOTEBOOK_PROBE):
        upload(user.client, USER, name, data)
    with terminal(user.client, USER) as term:
        out = term.run(f"pip install --no-index --force-reinstall ./{PROBE[0]}")
    assert "Successfully installed hubops-probe-1.0" in out, out
    assert "Permission denied" not in out, out
    assert "ERROR" not in out, out
    with kernel(user.client, USER) as k:
        result = k.execute(f"%pip install --no-index --force-reinstall ./{NOTEBOOK_PROBE[0]}")
    assert "Successfully installed hubops-notebook-probe-2.0" in result.stdout, result


def test_packages_installed_as_the_user_work_and_stay(target: Target, user: LoggedIn) -> None:
    """A new kernel imports what the user installed, from the user's directory, and so it
    does after a restart."""
    home = target.env.settings.singleuser.notebook_dir
    install_both(user)
    with kernel(user.client, USER) as k:
        first = k.execute(IMPORT_BOTH)
    assert not first.error, first.error
    assert all(f.startswith(f"{home}/.local/lib/") for f in first.stdout.split()[1:]), first
    listing = target.host.run(f"ls {user_dir(target)}/.local/lib/python3.*/site-packages")
    for package in ("hubops_probe", "hubops_notebook_probe"):
        assert package in listing.stdout, f"{package} is not in the user's directory on the host"
    restart(user)
    with kernel(user.client, USER) as k:
        again = k.execute(IMPORT_BOTH)
    assert not again.error, f"after a restart: {again.error}"


def test_the_whole_home_stays_and_runtime_files_and_caches_do_not(
    target: Target, user: LoggedIn
) -> None:
    """Dotfiles, git and SSH config, JupyterLab's settings, shell history and a kernel of
    the user's own environment, registered as the README says, survive a restart."""
    marker = f"history-{uuid.uuid4().hex[:8]}"
    with terminal(user.client, USER) as term:
        out = term.run(
            "git config --global user.name 'Bob Lab' && "
            "mkdir -p ~/.ssh && echo 'Host cluster' > ~/.ssh/config && "
            "python -m venv --system-site-packages ~/envs/thesis && "
            "~/envs/thesis/bin/python -m ipykernel install --user --name thesis "
            "--display-name 'Thesis (venv)' && "
            f"echo {marker} >/dev/null && echo DONE=yes"
        )
        assert values(out).get("DONE") == "yes", out
    settings = "lab/api/settings/@jupyterlab/apputils-extension:themes"
    put = user.client.server(USER, "PUT", settings, json={"raw": '{"theme": "JupyterLab Dark"}'})
    assert put.status_code == 204, f"saving a JupyterLab setting: {put.status_code} {put.text}"
    restart(user)
    with terminal(user.client, USER) as term:
        out = values(
            term.run(
                "echo NAME=$(git config --global user.name); "
                "echo SSH=$(cat ~/.ssh/config); "
                f"grep -q {marker} ~/.bash_history && echo HISTORY=yes"
            )
        )
    assert out.get("NAME") == "Bob Lab", f"~/.gitconfig is gone: {out}"
    assert out.get("SSH") == "Host cluster", f"~/.ssh/config is gone: {out}"
    assert out.get("HISTORY") == "yes", f"the shell history is gone: {out}"
    theme = user.client.server(USER, "GET", settings)
    assert "JupyterLab Dark" in theme.json().get("raw", ""), "JupyterLab's settings are gone"
    with kernel(user.client, USER, "thesis") as k:
        prefix = k.execute("import sys; print(sys.prefix)").stdout.strip()
    home = target.env.settings.singleuser.notebook_dir
    assert prefix == f"{home}/envs/thesis", f"the registered kernel runs {prefix}"
    d = user_dir(target)
    runtime = target.host.run(f"find {d}/.local/share/jupyter/runtime {d}/.cache -type f")
    assert not runtime.stdout.strip(), f"runtime files or caches in the home: {runtime.stdout}"
    elsewhere = target.in_container(target.user_container(USER), "ls /tmp/jupyter-runtime")
    assert "jpserver-" in elsewhere.stdout, f"the runtime files are not in /tmp: {elsewhere}"


def test_a_broken_jupyter_server_of_the_users_own_does_not_stop_jupyterlab(
    target: Target, user: LoggedIn
) -> None:
    upload(user.client, USER, BROKEN_SERVER[0], BROKEN_SERVER[1])
    with terminal(user.client, USER) as term:
        out = term.run(f"pip install --no-index --no-deps ./{BROKEN_SERVER[0]}")
    assert "Successfully installed jupyter-server-99.0" in out, out
    try:
        restart(user)  # waits until JupyterLab answers
        with kernel(user.client, USER) as k:
            seen = k.execute("import jupyter_server")
        assert "does not work" in seen.error, f"the kernel sees the user's packages: {seen}"
    finally:
        with terminal(user.client, USER) as term:
            term.run("pip uninstall -y jupyter_server")


def test_a_rebuilt_image_keeps_the_users_packages_and_home(target: Target, user: LoggedIn) -> None:
    """A redeploy with a new singleuser image (another revision): user's next server runs
    it, with her packages and dotfiles."""
    if not target.simulated:
        pytest.skip("changes the environment's settings: runs on the suites' own deployment")
    install_both(user)
    with terminal(user.client, USER) as term:
        term.run("git config --global user.name 'Bob Lab'")
    old = target.inspect(target.user_container(USER))["Config"]["Image"]
    rebuilt = f"hubops-test/singleuser:rebuilt-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "build", "--quiet", "--tag", rebuilt, "-"],
        input=f"FROM {old}\nLABEL org.hubops.test.rebuilt={rebuilt}\n",
        text=True,
        check=True,
        capture_output=True,
    )
    user.client.stop_server(USER)
    target.configure(singleuser__image=rebuilt)
    try:
        user.client.start_server(USER)
        image = target.inspect(target.user_container(USER))["Config"]["Image"]
        assert image == rebuilt, f"user's server runs {image}, not the rebuilt {rebuilt}"
        with kernel(user.client, USER) as k:
            result = k.execute(IMPORT_BOTH)
        assert not result.error, f"with the rebuilt image: {result.error}"
        with terminal(user.client, USER) as term:
            name = term.run("git config --global user.name").strip()
        assert name == "Bob Lab", f"~/.gitconfig with the rebuilt image: {name!r}"
    finally:
        user.client.stop_server(USER)
        target.configure(singleuser__image="base")
        user.client.start_server(USER)
        subprocess.run(["docker", "rmi", rebuilt], capture_output=True, check=False)


def usage(user: LoggedIn) -> dict[str, Any]:
    """What the status bar's GPU item polls, as it polls it."""
    response = user.client.server(USER, "GET", "api/hubops/usage?no_track_activity=1")
    assert response.status_code == 200, f"api/hubops/usage: {response.status_code} {response.text}"
    data: dict[str, Any] = response.json()
    return data


def test_the_usage_is_the_users_own_gpus_limit_and_oom_kills(
    target: Target, user: LoggedIn
) -> None:
    """The GPUs the user's container was given (what nvidia-smi lists inside it), the memory
    limit the spawner set, and a process killed at that limit counted once."""
    container = target.user_container(USER)
    env = dict(e.split("=", 1) for e in target.inspect(container)["Config"]["Env"])
    seen = usage(user)
    listed = target.in_container(container, "nvidia-smi -L").stdout
    assert [g["index"] for g in seen["gpus"]] == re.findall(r"^GPU (\d+):", listed, re.M), seen
    assert seen["gpus"], "the verify environment gives bob GPUs"
    if target.simulated:
        assert {g["name"] for g in seen["gpus"]} == {"hubops SIMULATED GPU"}, seen
    assert seen["memory_limit_bytes"] == int(env["MEM_LIMIT"]), seen
    before = seen["oom_kills"]
    assert isinstance(before, int), f"no OOM count from the container's cgroup: {seen}"
    hit_the_memory_limit(user.client, USER, int(env["MEM_LIMIT"]))
    assert usage(user)["oom_kills"] == before + 1


def test_the_status_bars_polls_are_not_activity(user: LoggedIn) -> None:
    """Both status bar items poll every 5 s: the server's last activity, which it reports to
    the hub and the idle culler reads, does not move for them; it moves for what the user
    does."""

    def last_activity() -> str:
        status = user.client.server(USER, "GET", "api/status").json()  # not activity itself
        return str(status["last_activity"])

    before = last_activity()
    for _ in range(3):
        # as jupyter-resource-usage's item asks (no parameter), and as hubops' item asks
        assert user.client.server(USER, "GET", "api/metrics/v1").status_code == 200
        usage(user)
        time.sleep(0.5)
    assert last_activity() == before, "the status bar's polling counted as the user's activity"
    assert user.client.contents(USER, "GET", "").status_code == 200
    assert last_activity() > before, "opening the file browser is activity"
