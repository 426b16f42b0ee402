"""A real browser (Debian's Chromium, driven by Playwright): sign in through the test OAuth
provider, reach JupyterLab, run a notebook cell that prints `nvidia-smi -L`, read the user's
own memory and GPUs in the status bar, and be told when a process hits the memory limit. The
screenshots are kept in build/test-artifacts/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import chromium
from tests.support.checkout import REPO_ROOT
from tests.support.jupyter import hit_the_memory_limit
from tests.support.oauth_provider import Provider
from tests.support.verify import USERS, LoggedIn, Target
from tests.support.wait import wait_for

ARTIFACTS = REPO_ROOT / "build" / "test-artifacts"
NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "gpu-check",
            "metadata": {},
            "outputs": [],
            "source": ["!nvidia-smi -L"],
        }
    ],
    "metadata": {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        }
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def test_sign_in_reach_jupyterlab_and_run_nvidia_smi(
    target: Target, provider: Provider, browser: Browser
) -> None:
    user = next(u for u in USERS if u.username == "bob")
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        _sign_in(page, target, user.username)
        _put_notebook(page, target, user.username)
        page.goto(f"{target.url}/user/{user.username}/lab/tree/gpu-check.ipynb", timeout=60_000)
        output = _run_first_cell(page)
        assert "GPU 0:" in output, f"the cell printed: {output!r}"
        if target.simulated:
            assert "SIMULATED" in output, "the simulated GPUs say so"
        _status_bar_shows_the_users_own_usage(page, target, user.username)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "jupyterlab-nvidia-smi.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        context.close()


def _sign_in(page: Page, target: Target, username: str) -> None:
    """From the hub's front page through the provider's form to the user's JupyterLab."""
    user = next(u for u in USERS if u.username == username)
    page.goto(target.url, timeout=30_000)
    page.get_by_role("link", name="Sign in with").or_(
        page.get_by_role("button", name="Sign in with")
    ).first.click()
    page.fill("#username", user.username)
    page.fill("#password", user.password)
    page.click("#sign-in")
    page.wait_for_url(f"**/user/{user.username}/lab**", timeout=180_000)


def _put_notebook(page: Page, target: Target, username: str) -> None:
    cookies = {
        c["name"]: c["value"]
        for c in page.context.cookies()
        if c.get("path", "/").startswith(f"/user/{username}")
    }
    response = page.context.request.put(
        f"{target.url}/user/{username}/api/contents/gpu-check.ipynb",
        data=json.dumps({"type": "notebook", "content": NOTEBOOK}),
        headers={"Content-Type": "application/json", "X-XSRFToken": cookies.get("_xsrf", "")},
    )
    assert response.ok, f"creating the notebook: {response.status} {response.text()[:200]}"


def _run_first_cell(page: Page) -> str:
    """Wait until the kernel is connected and idle, then run the cell with Shift+Enter."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)
    page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    out = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea-output")
    out.wait_for(timeout=90_000)
    page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=30_000)
    return out.inner_text()


MIB = 2**20
UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}  # jupyter-resource-usage's, 1024-based


def _server_env(target: Target, username: str) -> dict[str, str]:
    config = target.inspect(target.user_container(username))["Config"]
    return dict(e.split("=", 1) for e in config["Env"])


def _status_bar_shows_the_users_own_usage(page: Page, target: Target, username: str) -> None:
    """jupyter-resource-usage's item: the server's memory against the container's limit;
    hubops' item: the GPUs the server was given, with nvidia-smi's figures."""
    env = _server_env(target, username)
    mem = page.locator('.jp-StatusBar-Left .jp-StatusBar-TextItem[title="Current resource usage"]')
    mem.wait_for(timeout=30_000)
    text = mem.inner_text()
    m = re.search(r"Mem:\s+([\d.]+) / ([\d.]+) (B|KB|MB|GB)", text)
    assert m, f"the memory item says {text!r}"
    shown = float(m[2]) * UNITS[m[3]]
    assert abs(shown - int(env["MEM_LIMIT"])) < MIB, f"{text!r}: the limit is {env['MEM_LIMIT']}"
    gpu = page.locator(".hubops-usage-gpu")
    gpu.wait_for(timeout=30_000)
    gpus = gpu.inner_text()
    assert re.fullmatch(r"(GPU \d+: \d+% · [\d.]+/[\d.]+ GiB\s*)+", gpus), gpus
    if target.simulated:
        assert "79.6 GiB" in gpus, f"not the simulated GPUs' memory: {gpus!r}"
        assert "SIMULATED" in (gpu.get_attribute("title") or ""), "the item names the GPU"
    quota = int(env.get("HUBOPS_DISK_QUOTA_BYTES") or 0)
    if quota:  # the user's files against their disk quota
        disk = page.locator(".hubops-usage-disk")
        disk.wait_for(timeout=30_000)
        shown_quota = f"{quota / 2**30:.1f} GiB" if quota >= 2**30 else f"{round(quota / MIB)} MiB"
        said = disk.inner_text()
        assert re.fullmatch(rf"Disk: [\d.]+ (MiB|GiB) / {re.escape(shown_quota)}", said), said


def test_the_user_is_told_when_the_server_hits_its_memory_limit(
    target: Target, provider: Provider, browser: Browser, bob: LoggedIn
) -> None:
    """A process killed at the container's memory limit (here one in a terminal, as a
    kernel's would be) brings up a notification in the user's open JupyterLab; so does
    being over the disk quota, and the disk item turns red."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    quota = int(_server_env(target, "bob").get("HUBOPS_DISK_QUOTA_BYTES") or 0)
    if quota:  # bob is over his disk quota: his JupyterLab measures it and tells him
        target.in_container(bob.container, f"head -c {quota + 8 * MIB} /dev/zero > ~/over.bin")
        # his server measures again at most every 10 s when asked (a JupyterLab opening);
        # the page below then has the figure at its first poll
        wait_for(
            lambda: bob.client.server("bob", "GET", "api/hubops/usage?fresh=1").json()["disk"][
                "over_quota"
            ],
            30,
            "bob's server to measure his files",
        )
    try:
        _sign_in(page, target, "bob")
        page.locator(".hubops-usage-gpu").wait_for(timeout=60_000)  # it has polled once
        if quota:
            warning = page.locator(".jp-Notification-Toast-warning .jp-toast-message")
            warning.wait_for(timeout=30_000)
            said = warning.inner_text()
            assert "over your disk quota of" in said, said
            assert page.locator(".hubops-usage-disk.hubops-usage-over").count() == 1
        limit = int(_server_env(target, "bob")["MEM_LIMIT"])
        hit_the_memory_limit(bob.client, "bob", limit)
        toast = page.locator(".jp-Notification-Toast-error .jp-toast-message")
        toast.wait_for(timeout=30_000)
        said = toast.inner_text()
        assert f"memory limit ({limit / 2**30:.1f} GiB)" in said, said
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab-oom-notice.png"), full_page=True)
        context.close()
        target.in_container(bob.container, "rm -f ~/over.bin")
