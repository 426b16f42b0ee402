"""The singleuser images: JupyterLab for one user, as the non-root user, with JupyterHub's
version matching the hub. Tests for `base` run on every variant built on it (pytorch too).
"""

from __future__ import annotations

import pytest

from hubops.images.build import BuiltImage
from hubops.images.table import SINGLEUSER, VERSIONS
from tests.support.containers import Runner
from tests.support.images import family


@pytest.fixture(params=family("base"))
def image(request: pytest.FixtureRequest, built: dict[str, BuiltImage]) -> BuiltImage:
    """Each variant of the base family that the tested environment uses (base, pytorch...)."""
    return built[f"{SINGLEUSER}:{request.param}"]


def test_runs_as_the_non_root_user(image: BuiltImage, run_container: Runner) -> None:
    host = run_container(image.pinned)
    uid, gid = host.user().uid, host.user().gid
    assert (uid, gid) == (1000, 100), f"{image.pinned} runs as {uid}:{gid}, expected 1000:100"
    assert host.user().name == "jovyan"


def test_workdir_is_the_notebook_dir_and_writable(image: BuiltImage, run_container: Runner) -> None:
    host = run_container(image.pinned)
    assert host.check_output("pwd") == "/home/jovyan/work"
    work = host.file("/home/jovyan/work")
    assert (work.uid, work.gid) == (1000, 100), f"work dir owned by {work.uid}:{work.gid}"
    host.check_output("touch /home/jovyan/work/probe && rm /home/jovyan/work/probe")


def test_jupyterhub_singleuser_works_and_matches_the_pin(
    image: BuiltImage, run_container: Runner
) -> None:
    host = run_container(image.pinned)
    version = host.check_output("jupyterhub-singleuser --version")
    assert version.strip().endswith(VERSIONS["JUPYTERHUB_VERSION"]), f"version: {version!r}"
    assert image.labels["org.hubops.jupyterhub.version"] == VERSIONS["JUPYTERHUB_VERSION"]


def test_jupyterlab_is_installed_and_the_default_ui(
    image: BuiltImage, run_container: Runner
) -> None:
    host = run_container(image.pinned)
    assert host.run("jupyter lab --version").rc == 0, "jupyter lab is missing"
    extensions = host.check_output("jupyter server extension list 2>&1")
    assert "jupyterlab" in extensions, extensions
    assert "enabled" in extensions, extensions
    default_url = host.check_output(
        'python3 -c "from jupyter_server.serverapp import ServerApp; a = ServerApp(); '
        'a.load_config_file(); print(a.default_url)"'
    )
    assert default_url == "/lab", f"default URL is {default_url!r}, expected /lab"


def test_labels_describe_the_build(image: BuiltImage) -> None:
    labels = image.labels
    assert labels["org.hubops.image"] == SINGLEUSER
    assert labels["org.hubops.variant"] == image.variant
    assert labels["org.opencontainers.image.revision"] in image.pinned
    assert labels["org.hubops.os"], "the OS label is empty"
    assert "org.hubops.cuda" in labels, "the CUDA label is missing"
    tags = [ref.rpartition(":")[2] for ref in image.refs]
    assert f"{image.variant}-{labels['org.hubops.os']}" in tags or any(
        t.startswith(f"{image.variant}-cuda") for t in tags
    ), f"no variant+platform tag in {tags}"
    assert image.variant in tags, f"no moving variant tag in {tags}"


def test_trusts_the_configured_ca_bundle(image: BuiltImage, run_container: Runner) -> None:
    """The environment's CA bundle is in the image's trust store (pip works behind TLS
    interception or with an internal CA)."""
    host = run_container(image.pinned)
    extra = host.file("/usr/local/share/ca-certificates/hubops-extra.crt")
    assert extra.exists, "the configured CA bundle did not reach the trust store"
    assert host.file("/etc/ssl/certs/ca-certificates.crt").contains("BEGIN CERTIFICATE")


def test_start_up_costs_are_trimmed(image: BuiltImage, run_container: Runner) -> None:
    """What the bench showed slow stays out: rfc3987-syntax (Lark parsers built at import)
    is gone without breaking a requirement, and the idle server extensions are off."""
    host = run_container(image.pinned)
    gone = host.run("python3 -c 'import rfc3987_syntax'")
    assert gone.rc != 0, f"rfc3987_syntax is back in {image.pinned}: a requirement pulled it in"
    check = host.run("pip check")
    assert check.rc == 0, f"pip check in {image.pinned}: {check.stdout}{check.stderr}"
    assert host.run("python3 -c 'import jupyter_events.logger'").rc == 0
    off = host.check_output(
        'python3 -c "from jupyter_server.serverapp import ServerApp; a = ServerApp(); '
        'a.load_config_file(); print(sorted(k for k, v in a.jpserver_extensions.items() if not v))"'
    )
    assert off == "['jupyter_lsp', 'notebook_shim']", f"turned off: {off}"


def test_a_user_server_loads_no_orm(image: BuiltImage, run_container: Runner) -> None:
    """The carried patch (singleuser/patches/, docs/upstream/): jupyterhub.singleuser and a
    served app load neither JupyterHub's ORM nor SQLAlchemy nor Alembic. Fails when upstream
    moves under the patch (the build then fails first, if it no longer applies) or a new
    import path brings them back."""
    host = run_container(image.pinned)
    script = (
        "import sys; import jupyterhub.singleuser; "
        "from jupyterhub.singleuser.mixins import make_singleuser_app; "
        "from jupyter_server.serverapp import ServerApp; make_singleuser_app(ServerApp); "
        "import jupyterhub.log, jupyterhub.scopes, jupyterhub.utils, jupyterhub.services.auth; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'alembic'}), "
        "'jupyterhub.orm' in sys.modules)"
    )
    assert host.check_output(f'python3 -c "{script}"') == "[] False"
    # the patched modules still do their work where the DB is there (the hub's side)
    hub_side = host.check_output(
        'python3 -c "import jupyterhub.scopes as s; '
        'print(s.orm.User.__name__, s.sa.__name__, callable(s.roles.get_roles_for))"'
    )
    assert hub_side == "User sqlalchemy True"


def test_the_scientific_layer_works(image: BuiltImage, run_container: Runner) -> None:
    """What a researcher imports first, with a plot saved and a model fitted: every variant has
    it (README, Images)."""
    host = run_container(image.pinned)
    script = (
        "import numpy as np, scipy.stats, pandas as pd, ipywidgets, matplotlib; "
        "matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
        "from sklearn.linear_model import LinearRegression; "
        "x = np.arange(10.0); df = pd.DataFrame({'x': x, 'y': 2 * x + 1}); "
        "m = LinearRegression().fit(df[['x']], df['y']); "
        "plt.plot(df.x, df.y); plt.savefig('/tmp/p.png'); "
        "print(round(float(m.coef_[0]), 3), round(float(scipy.stats.pearsonr(x, df.y)[0]), 3))"
    )
    assert host.check_output(f'python3 -c "{script}"') == "2.0 1.0"
    assert host.file("/tmp/p.png").size > 1000, "matplotlib wrote no plot"


def test_a_login_shell_finds_the_images_python(image: BuiltImage, run_container: Runner) -> None:
    """`docker exec -it <server> bash -l` and JupyterLab's terminal run a login shell, whose
    /etc/profile resets PATH: python, pip and jupyter are still the image's."""
    host = run_container(image.pinned)
    found = host.check_output("bash -lc 'command -v python python3 pip jupyter'").split()
    assert len(found) == 4, f"a login shell finds {found}"
    same = host.check_output(
        'bash -lc \'python -c "import sys; print(sys.executable)"; '
        'pip --version | grep -o "python [0-9.]*"\''
    )
    assert "/usr/bin/python" in same, same
    assert "python 3." in same, same
    path = host.check_output("bash -lc 'echo $PATH'")
    assert f"{host.check_output('echo $HOME')}/.local/bin" in path, path


def test_a_login_shell_names_packages_left_by_another_python(
    image: BuiltImage, run_container: Runner
) -> None:
    """After an image upgrade that moves Python's minor version, the user's packages for the
    old one are not seen: the shell says so, once, in plain words; not otherwise."""
    host = run_container(image.pinned)
    quiet = host.check_output("bash -lc true 2>&1")
    assert quiet == "", f"a login shell prints {quiet!r} with nothing to say"
    host.check_output("mkdir -p ~/.local/lib/python3.1/site-packages/oldpkg")
    said = host.check_output("bash -lc true 2>&1")
    assert "python3.1" in said, said
    assert "pip install" in said, said
