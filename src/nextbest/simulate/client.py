"""A small JSON-over-HTTP client of a running `nextbest serve`, for the live simulation.

The standard library's client keeps the core free of an HTTP dependency; every failure becomes a
`NextbestError` that names the route and, for an answer that is not 2xx, its status and message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from nextbest.errors import NextbestError


class ServiceClient:
    """GET and POST JSON to one service, with its API key as a bearer token when one is given."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise NextbestError(f"--url must be an http:// or https:// address, got {url!r}")
        self.url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout

    def get(self, route: str) -> Any:
        """The JSON answer of `GET route`."""
        return self._call("GET", route, None)

    def post(self, route: str, body: Any) -> Any:
        """The JSON answer of `POST route` with `body` as JSON."""
        return self._call("POST", route, json.dumps(body).encode())

    def _call(self, method: str, route: str, data: bytes | None) -> Any:
        request = urllib.request.Request(self.url + route, data, self._headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            raise NextbestError(
                f"{method} {route} at {self.url} answered {exc.code}: {_message(exc.read())}"
            ) from exc
        except OSError as exc:  # URLError (refused, unknown host), timeouts, dropped connections
            reason = getattr(exc, "reason", None) or exc
            raise NextbestError(
                f"cannot reach the service at {self.url} ({method} {route}): {reason}"
            ) from exc
        try:
            return json.loads(text)
        except ValueError as exc:
            raise NextbestError(
                f"{method} {route} at {self.url} did not answer JSON: {text[:200]!r}"
            ) from exc


def _message(body: bytes) -> str:
    """The service's `error` message, else the start of the body as it came."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace") or "(no body)"
