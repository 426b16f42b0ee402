"""The claims a site's OP releases: the user's names and email, and their groups."""

from __future__ import annotations

from typing import Any

from oidc_provider.lib.claims import ScopeClaims


def userinfo(claims: dict[str, Any], user: Any) -> dict[str, Any]:
    claims["name"] = user.username.title()
    claims["preferred_username"] = user.username
    claims["email"] = user.email
    return claims


class GroupsClaims(ScopeClaims):  # type: ignore[misc]
    """``groups`` scope -> ``groups`` claim (only when the client asks for it)."""

    info_groups = ("Groups", "The groups you belong to.")

    def scope_groups(self) -> dict[str, Any]:
        return {"groups": sorted(g.name for g in self.user.groups.all())}
