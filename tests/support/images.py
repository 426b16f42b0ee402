"""The images under test and the variants each one's tests run on."""

from __future__ import annotations

from hubops.config import environments
from hubops.images.build import wanted
from hubops.images.table import SINGLEUSER, spec
from tests.support.checkout import REPO_ROOT, tested_env_name


def family(variant: str) -> list[str]:
    """``variant`` and its children, as far as the tested environment builds them."""
    settings = environments.load(REPO_ROOT, tested_env_name()).settings
    used = {v.name for image, v in wanted(settings) if image.name == SINGLEUSER}
    return [v.name for v in spec(SINGLEUSER).children(variant) if v.name in used]
