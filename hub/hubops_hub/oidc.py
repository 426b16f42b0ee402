"""OpenID Connect discovery: the endpoints an issuer publishes, checked as the spec says.

Pure functions, no I/O, shared by the hub (``hubops_hub.auth``, at the first login) and by
``invoke check --strict`` on the operator's machine (``hubops.config.oidc``), so both read the same
document the same way. OpenID Connect Discovery 1.0, sections 4 and 4.3: the document lives at
``<issuer>/.well-known/openid-configuration`` and its ``issuer`` must be the issuer asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

WELL_KNOWN = "/.well-known/openid-configuration"

# document key -> GenericOAuthenticator trait
ENDPOINTS = {
    "authorization_endpoint": "authorize_url",
    "token_endpoint": "token_url",
    "userinfo_endpoint": "userdata_url",
}


class DiscoveryError(ValueError):
    """The issuer's discovery document cannot be used; the message says why and what to do."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + WELL_KNOWN


def endpoints(issuer: str, document: Mapping[str, Any] | Any) -> dict[str, str]:
    """GenericOAuthenticator trait -> URL, from the discovery document of ``issuer``."""
    url = discovery_url(issuer)
    if not isinstance(document, Mapping):
        raise DiscoveryError(f"{url} is not a JSON object; is {issuer} the issuer URL?")
    published = str(document.get("issuer", ""))
    if published.rstrip("/") != issuer.rstrip("/"):
        raise DiscoveryError(
            f"{url} names the issuer {published!r}, not {issuer!r}; use exactly the issuer "
            "the document names (OpenID Connect Discovery 4.3)"
        )
    found: dict[str, str] = {}
    for key, trait in ENDPOINTS.items():
        value = document.get(key)
        if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https"):
            raise DiscoveryError(
                f"{url} has no {key}; hubops needs it to log users in. Check that the issuer "
                "is an OpenID provider, or give auth.authorize_url, auth.token_url and "
                "auth.userdata_url instead of auth.issuer"
            )
        found[trait] = value
    return found
