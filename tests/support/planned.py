"""An environment of a scratch checkout as a deploy holds it: its settings and its rendered
plan, with fixed image revisions (unit tests do not depend on the checkout's git state)."""

from __future__ import annotations

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.support.checkout import Checkout

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}


def planned(checkout: Checkout, name: str, text: str | None = None) -> tuple[Plan, Environment]:
    """The rendered plan and the settings of environment ``name`` (written first from
    ``text`` when given)."""
    if text is not None:
        checkout.write_env(name, text)
    env = environments.load(checkout.root, name)
    return render(checkout.root, env, REVS).plan, env.settings
