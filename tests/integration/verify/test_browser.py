"""A real browser (Debian's Chromium, driven by Playwright): sign in through the test OAuth
provider, reach JupyterLab, run a notebook cell that prints `nvidia-smi -L`. The screenshot is
kept in build/test-artifacts/."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.support.browser import chromium
from tests.support.checkout import REPO_ROOT
from tests.support.oauth_provider import Provider
from tests.support.verify import USERS, Target

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
        page.goto(target.url, timeout=30_000)
        page.get_by_role("link", name="Sign in with").or_(
            page.get_by_role("button", name="Sign in with")
        ).first.click()
        page.fill("#username", user.username)
        page.fill("#password", user.password)
        page.click("#sign-in")
        page.wait_for_url(f"**/user/{user.username}/lab**", timeout=180_000)
        _put_notebook(page, target, user.username)
        page.goto(f"{target.url}/user/{user.username}/lab/tree/gpu-check.ipynb", timeout=60_000)
        output = _run_first_cell(page)
        assert "GPU 0:" in output, f"the cell printed: {output!r}"
        if target.simulated:
            assert "SIMULATED" in output, "the simulated GPUs say so"
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "jupyterlab-nvidia-smi.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        context.close()


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
