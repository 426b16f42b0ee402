"""The authenticator's traits that hubops' own hub and the zero-to-jupyterhub chart's stock
OAuthenticator classes share: who may log in, and the OAuth client. Each side adds its own
(the admin list's trait name, the provider's URLs, groups)."""

from __future__ import annotations

from typing import Any

from hubops.config.settings import Environment, GitHubAuth, GitLabAuth, OIDCAuth, SharedPasswordAuth

Auth = GitLabAuth | GitHubAuth | OIDCAuth | SharedPasswordAuth


def allowed(auth: Auth) -> dict[str, Any]:
    """Who may log in: the allowed users, or everybody the provider lets through."""
    return {
        "allowed_users": sorted(auth.allowed_users),
        "allow_all": auth.allow_all,
        # JupyterHub 5 lets every user already in the DB in when allowed_users is set; then a
        # user removed from allowed_users or from an allowed group could still log in.
        "allow_existing_users": False,
    }


def oauth_client(settings: Environment) -> dict[str, Any]:
    """The OAuth client: its ID, the callback URL the provider knows, the scopes it asks."""
    auth = settings.auth
    assert not isinstance(auth, SharedPasswordAuth), "an OAuth provider's traits only"
    return {
        "client_id": auth.client_id,
        "oauth_callback_url": settings.oauth_callback_url,
        "scope": settings.oauth_scopes,
    }
