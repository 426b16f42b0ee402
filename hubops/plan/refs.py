"""Names of an environment's containers and network, and the image references it runs."""

from __future__ import annotations

from collections.abc import Mapping

from hubops.config.settings import Environment
from hubops.images import table as images
from hubops.plan.model import Digests


def names(env_name: str) -> dict[str, str]:
    prefix = f"hubops-{env_name}"
    return {
        "network": prefix,
        "proxy": f"{prefix}-proxy",
        "hub": f"{prefix}-hub",
        "user_prefix": f"{prefix}-user",
    }


def hub_image(settings: Environment, revs: Mapping[str, str], digests: Digests = None) -> str:
    """The hub image's reference (by digest once pushed): the hub, and the GPU monitor's
    probe, run it."""
    return images.by_digest(images.pinned_ref(settings.registry.url, "hub", revs["hub"]), digests)


def singleuser_choices(
    settings: Environment, revs: Mapping[str, str], digests: Digests = None
) -> dict[str, str]:
    """Display name -> image reference (by digest once pushed), the default first."""
    registry = settings.registry.url
    return {
        display: images.by_digest(images.resolve_singleuser(value, registry, revs), digests)
        for display, value in settings.singleuser.choices.items()
    }
