"""The hub's authenticators: OAuthenticator's and JupyterHub's, plus what hubops adds.

**Admins through roles.** The rendered config lists the admins in the hub's ``admin`` role
(``JupyterHub.load_roles``), whose membership JupyterHub makes exact at every start: a name
removed from ``auth.admin_users`` loses admin rights at the next deploy. At login these
authenticators also say ``admin: True`` or ``admin: False`` explicitly (JupyterHub's default
says nothing for non-admins, so a revoked admin would stay one).

**Groups.** With ``manage_groups`` the user's JupyterHub groups are set at every login to the
provider's groups plus the environment's static ``groups:`` that list the user:

- GitLab: the ``groups`` claim of GitLab's OpenID userinfo (full paths, subgroups included),
  which needs the ``openid`` scope. GitLab's group APIs would need ``read_api``, which also
  reads every project the user can see.
- GitHub: the user's organizations and ``org:team`` pairs, which need ``read:org``.
- OpenID Connect: the groups claim of the userinfo (``groups_claim``).

``allowed_groups`` and the spawner's profiles then use these groups. A provider that does not
answer the groups request is logged, and the user keeps only the static groups: users allowed
by name still log in, members of allowed groups do not.

**OIDC by issuer.** ``HubopsOIDCAuthenticator.issuer`` finds the endpoints by discovery at the
first login (not at start-up, so an identity provider that is down does not stop the hub).
"""

from __future__ import annotations

from hmac import compare_digest
from typing import Any

from jupyterhub.authenticators.shared import SharedPasswordAuthenticator
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.github import GitHubOAuthenticator
from oauthenticator.gitlab import GitLabOAuthenticator
from oauthenticator.oauth2 import OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from traitlets import Dict, Set, Unicode
from traitlets.config import LoggingConfigurable

from hubops_hub.oidc import DiscoveryError, discovery_url, endpoints

GROUPS_KEY = "hubops_groups"  # where the merged groups go in auth_state


def static_groups_of(static: dict[str, list[str]], username: str) -> set[str]:
    return {group for group, members in static.items() if username in members}


class HubopsOAuthMixin(LoggingConfigurable):
    """Explicit admin status and merged groups, for every OAuthenticator of hubops."""

    admins = Set(
        Unicode(),
        config=True,
        help="User names that are admins (also in the admin role); everybody else is not.",
    )
    static_groups = Dict(
        config=True,
        help="group -> user names from the environment file, added to the provider's groups.",
    )

    async def provider_groups(self, auth_model: dict[str, Any]) -> set[str]:
        """The user's groups as the provider tells them (empty when it does not)."""
        raise NotImplementedError

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model = await super().update_auth_model(auth_model)  # type: ignore[misc]
        name = auth_model["name"]
        auth_model["admin"] = name in self.admins
        if getattr(self, "manage_groups", False):
            groups = await self.provider_groups(auth_model)
            groups |= static_groups_of(self.static_groups, name)
            auth_model["auth_state"][GROUPS_KEY] = sorted(groups)
        return auth_model

    def _token(self, auth_model: dict[str, Any]) -> tuple[str, str]:
        response = auth_model["auth_state"]["token_response"]
        return str(response["access_token"]), str(response.get("token_type") or "Bearer")

    def _groups_unavailable(self, name: str, what: str, exc: Exception) -> set[str]:
        self.log.error(
            "hubops: could not read %s's groups from %s (%s); they get only the static groups "
            "of the environment file. Check the OAuth scopes (auth.scopes) and the provider.",
            name,
            what,
            exc,
        )
        return set()


class HubopsGitLabOAuthenticator(HubopsOAuthMixin, GitLabOAuthenticator):  # type: ignore[misc]
    async def provider_groups(self, auth_model: dict[str, Any]) -> set[str]:
        token, _ = self._token(auth_model)
        url = f"{self.gitlab_url}/oauth/userinfo"
        try:
            info = await self.httpfetch(
                url,
                "fetching the user's GitLab groups",
                method="GET",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                validate_cert=self.validate_server_cert,
            )
        except HTTPClientError as exc:
            return self._groups_unavailable(auth_model["name"], url, exc)
        return {str(g) for g in info.get("groups") or []}


class HubopsGitHubOAuthenticator(HubopsOAuthMixin, GitHubOAuthenticator):  # type: ignore[misc]
    async def provider_groups(self, auth_model: dict[str, Any]) -> set[str]:
        token, token_type = self._token(auth_model)
        try:
            orgs = await self._paginated_fetch(
                f"{self.github_api}/user/orgs?per_page=100", token, token_type
            )
            teams = await self._paginated_fetch(
                f"{self.github_api}/user/teams?per_page=100", token, token_type
            )
        except HTTPClientError as exc:
            return self._groups_unavailable(auth_model["name"], self.github_api, exc)
        groups = {str(o["login"]) for o in orgs}
        for team in teams:
            org = str(team["organization"]["login"])
            groups |= {org, f"{org}:{team['slug']}"}
        return groups


class _DiscoveringLoginHandler(OAuthLoginHandler):  # type: ignore[misc]
    """The OAuth redirect, after the issuer's endpoints are known."""

    async def get(self) -> None:
        await self.authenticator.discover()
        super().get()


class HubopsOIDCAuthenticator(HubopsOAuthMixin, GenericOAuthenticator):  # type: ignore[misc]
    issuer = Unicode(
        "",
        config=True,
        help="OpenID issuer URL: endpoints that are not set come from its discovery document.",
    )
    groups_claim = Unicode("groups", config=True, help="Userinfo claim that lists the groups.")

    login_handler = _DiscoveringLoginHandler
    _discovered = False

    async def discover(self) -> None:
        if not self.issuer or self._discovered:
            return
        url = discovery_url(self.issuer)
        try:
            document = await self.httpfetch(
                url,
                "fetching the OpenID discovery document",
                method="GET",
                headers={"Accept": "application/json"},
                validate_cert=self.validate_server_cert,
            )
            found = endpoints(self.issuer, document)
        except (OSError, HTTPClientError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, DiscoveryError) else f"{url}: {exc}"
            self.log.error("hubops: OpenID discovery failed: %s", detail)
            raise web.HTTPError(
                503, f"The identity provider {self.issuer} could not be reached; try again later."
            ) from None
        for trait, value in found.items():
            if not getattr(self, trait):
                setattr(self, trait, value)
        self._discovered = True

    async def authenticate(self, handler: Any, data: Any = None) -> Any:
        await self.discover()
        return await super().authenticate(handler, data)

    async def provider_groups(self, auth_model: dict[str, Any]) -> set[str]:
        info = auth_model["auth_state"].get(self.user_auth_state_key) or {}
        if self.groups_claim not in info:
            self.log.error(
                "hubops: the userinfo of %s has no %r claim; ask for the scope that releases "
                "it (auth.scopes; Dex and many providers call it 'groups') or set "
                "auth.groups_claim. Claims received: %s",
                auth_model["name"],
                self.groups_claim,
                ", ".join(sorted(info)),
            )
            return set()
        value = info[self.groups_claim]
        return {str(value)} if isinstance(value, str) else {str(g) for g in value or []}


class HubopsSharedPasswordAuthenticator(SharedPasswordAuthenticator):  # type: ignore[misc]
    """The shared password for users; the admin password for the names in ``admins``."""

    admins = Set(
        Unicode(),
        config=True,
        help="User names that log in with the admin password and are admins (admin role).",
    )

    async def authenticate(self, handler: Any, data: dict[str, str]) -> Any:
        name = self.normalize_username(data["username"])
        if name in self.admins:
            ok = bool(self.admin_password) and compare_digest(
                data["password"].encode(), self.admin_password.encode()
            )
            return {"name": name, "admin": True, "groups": []} if ok else None
        return await super().authenticate(handler, data)

    def check_allow_config(self) -> None:
        # SharedPasswordAuthenticator warns that admin_password without admin_users lets no
        # admin in; here the admins are `admins`, so skip that warning and keep the others.
        admin_users, self.admin_users = self.admin_users, set(self.admins)
        try:
            super().check_allow_config()
        finally:
            self.admin_users = admin_users
