"""``invoke check --strict`` for an OIDC login by issuer: fetch the discovery document from
the operator's machine and check it the way the hub will (``hubops_hub.oidc``)."""

from __future__ import annotations

from pathlib import Path

import requests
from hubops_hub.oidc import DiscoveryError, discovery_url, endpoints

from hubops.config.environments import LoadedEnvironment
from hubops.config.settings import OIDCAuth
from hubops.errors import ConfigError


def check_discovery(env: LoadedEnvironment, timeout: float = 10) -> dict[str, str] | None:
    """The endpoints the issuer publishes (None: the environment names no issuer).

    The request trusts this machine's CA store, plus ``auth.ca_bundle`` when that file
    exists here too. Every failure is one ConfigError that names the key and the fix.
    """
    auth = env.settings.auth
    if not isinstance(auth, OIDCAuth) or auth.issuer is None:
        return None
    where = env.origins.get(("auth", "issuer"), env.file)
    url = discovery_url(auth.issuer)
    verify: bool | str = True
    if auth.ca_bundle is not None and Path(auth.ca_bundle).is_file():
        verify = auth.ca_bundle
    try:
        response = requests.get(
            url, timeout=timeout, verify=verify, headers={"Accept": "application/json"}
        )
    except requests.exceptions.SSLError as exc:
        raise ConfigError(
            f"{where}: auth.issuer: got {auth.issuer!r}; its TLS certificate is not trusted "
            f"({_short(exc)}); if an internal CA signed it, set auth.ca_bundle to that CA's "
            "PEM file"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise ConfigError(
            f"{where}: auth.issuer: got {auth.issuer!r}; {url} does not answer "
            f"({_why(exc, timeout)}); check the URL and that this machine can reach the provider"
        ) from None
    if response.status_code != 200:
        raise ConfigError(
            f"{where}: auth.issuer: got {auth.issuer!r}; {url} answered HTTP "
            f"{response.status_code}; check the issuer URL (Keycloak: https://HOST/realms/REALM)"
        )
    try:
        document = response.json()
    except ValueError:
        raise ConfigError(
            f"{where}: auth.issuer: got {auth.issuer!r}; {url} is not JSON; is it the issuer URL?"
        ) from None
    try:
        return endpoints(auth.issuer, document)
    except DiscoveryError as exc:
        raise ConfigError(f"{where}: auth.issuer: got {auth.issuer!r}; {exc}") from None


def _why(exc: requests.exceptions.RequestException, timeout: float) -> str:
    """The reason in a few words, not urllib3's whole chain."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout:.0f}s"
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve"
    if "No route to host" in text or "Network is unreachable" in text:
        return "no route to the host"
    return _short(exc)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."
