"""A JupyterHub client for tests: logs in through the hub's own login form, starts servers
through the REST API, and reaches a user's JupyterLab through the proxy, as a browser would."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urljoin

import requests

from tests.support.wait import wait_for


@dataclass
class HubClient:
    base_url: str  # the public URL, e.g. http://127.0.0.1:8123
    verify: bool | str = True
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    def _cookie(self, name: str, path_prefix: str) -> str | None:
        for cookie in self.session.cookies:
            if cookie.name == name and (cookie.path or "/").startswith(path_prefix):
                return cookie.value
        return None

    def _xsrf(self) -> str:
        """The hub's XSRF token (the hub's _xsrf cookie, not a user server's)."""
        token = self._cookie("_xsrf", "/hub")
        if not token:
            self.session.get(self.url("/hub/login"), verify=self.verify, timeout=10)
            token = self._cookie("_xsrf", "/hub")
        return token or ""

    def login(
        self, username: str, password: str, timeout: float = 20, next_url: str = ""
    ) -> requests.Response:
        """POST the hub's login form (shared-password or any form authenticator); with
        ``next_url`` (e.g. /hub/home) the hub goes there instead of starting the server."""
        xsrf = self._xsrf()
        query = f"?{urlencode({'next': next_url})}" if next_url else ""
        return self.session.post(
            self.url(f"/hub/login{query}"),
            data={"username": username, "password": password, "_xsrf": xsrf},
            verify=self.verify,
            timeout=timeout,
            allow_redirects=True,
        )

    def oauth_login(self, username: str, password: str) -> requests.Response:
        """Log in through the OAuth provider: /hub/oauth_login -> the provider's sign-in form
        (filled in as a browser does, hidden fields and all) -> back to /hub/oauth_callback
        -> wherever the hub sends the user next."""
        page = self.session.get(self.url("/hub/oauth_login"), verify=self.verify, timeout=20)
        assert page.status_code == 200, f"provider sign-in form: {page.status_code} {page.url}"
        form = _Form.parse(page.text)
        return self.session.post(
            urljoin(page.url, form.action or page.url),
            data={**form.hidden, "username": username, "password": password},
            headers={"Referer": page.url},
            verify=self.verify,
            timeout=60,
        )

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-XSRFToken": self._xsrf(), **kwargs.pop("headers", {})}
        return self.session.request(
            method,
            self.url(f"/hub/api/{path.lstrip('/')}"),
            headers=headers,
            verify=self.verify,
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )

    def start_server(self, username: str, timeout: float = 120, **options: Any) -> float:
        """Start the user's server and wait until JupyterLab answers; returns the seconds."""
        start = time.monotonic()
        response = self.api("POST", f"users/{username}/server", json=options or None)
        assert response.status_code in (201, 202), (
            f"starting {username}'s server: {response.status_code} {response.text[:300]}"
        )
        wait_for(lambda: self.server_ready(username), timeout, f"{username}'s server to be ready")
        wait_for(lambda: self.lab_status(username) == 200, 60, f"{username}'s JupyterLab")
        return time.monotonic() - start

    def server_ready(self, username: str) -> bool:
        user = self.api("GET", f"users/{username}").json()
        server = (user.get("servers") or {}).get("")
        return bool(server and server.get("ready"))

    def events(self, username: str, timeout: float) -> Iterator[dict[str, Any]]:
        """The user's spawn progress stream, event by event, as a browser's page reads it."""
        with self.session.get(
            self.url(f"/hub/api/users/{username}/server/progress"),
            headers={"X-XSRFToken": self._xsrf(), "Accept": "text/event-stream"},
            verify=self.verify,
            timeout=timeout,
            stream=True,
        ) as response:
            for line in response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    yield json.loads(line[5:])

    def progress(self, username: str, timeout: float = 120) -> list[dict[str, Any]]:
        """The events of the user's spawn progress stream, until it is ready or failed."""
        events: list[dict[str, Any]] = []
        for event in self.events(username, timeout):
            events.append(event)
            if event.get("ready") or event.get("failed"):
                break
        return events

    def place_in_line(self, username: str, timeout: float = 30) -> tuple[int, int] | None:
        """(place, length) of the user's spawn in the hub's line, from the first event of its
        progress stream that is not "Server requested"; None when that event is no place."""
        for event in self.events(username, timeout):
            message = str(event.get("message", ""))
            if message == "Server requested":
                continue
            found = re.search(r"you are (\d+)\w\w in line of (\d+)", message)
            return (int(found[1]), int(found[2])) if found else None
        return None

    def stop_server(self, username: str, timeout: float = 60) -> None:
        response = self.api("DELETE", f"users/{username}/server")
        assert response.status_code in (202, 204), response.text[:300]
        wait_for(
            lambda: not (self.api("GET", f"users/{username}").json().get("servers")),
            timeout,
            f"{username}'s server to stop",
        )

    def lab_status(self, username: str) -> int:
        """Open the user's JupyterLab through the proxy, as a browser does (the OAuth hop to
        the hub included), then ask its API for its status; returns the API's status code."""
        page = self.session.get(self.url(f"/user/{username}/lab"), verify=self.verify, timeout=15)
        if page.status_code != 200:
            return page.status_code
        response = self.session.get(
            self.url(f"/user/{username}/api/status"), verify=self.verify, timeout=15
        )
        return response.status_code

    def server(
        self, username: str, method: str, path: str, timeout: float = 60, **kwargs: Any
    ) -> requests.Response:
        """A request to the user's server (``path`` under /user/<name>/), as JupyterLab makes
        it: the login's cookies and the server's own XSRF token."""
        xsrf = self._cookie("_xsrf", f"/user/{username}") or self._xsrf()
        return self.session.request(
            method,
            self.url(f"/user/{username}/{path.lstrip('/')}"),
            headers={"X-XSRFToken": str(xsrf)},
            verify=self.verify,
            timeout=timeout,
            **kwargs,
        )

    def contents(self, username: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The Jupyter contents API of the user's server."""
        return self.server(username, method, f"api/contents/{path.lstrip('/')}", 30, **kwargs)


class _Form(HTMLParser):
    """The first form of a page: its action and its hidden fields (CSRF tokens, next)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self._depth = 0  # 0: before the form, 1: inside, 2: after

    @classmethod
    def parse(cls, text: str) -> _Form:
        form = cls()
        form.feed(text)
        return form

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self._depth == 0:
            self._depth, self.action = 1, a.get("action", "")
        elif tag == "input" and self._depth == 1 and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._depth == 1:
            self._depth = 2
