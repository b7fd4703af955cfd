"""ASGI middleware in front of every endpoint: the API key, the request body size cap, and paths that
BentoML's router cannot route.

Both answer before the request reaches BentoML, so a refused request costs no parsing and no model work.
The probes stay open: an orchestrator checks health without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/livez", "/readyz", "/healthz"})


async def send_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON error answer `{"error": message}` with `status`."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ApiKeyGuard:
    """Every HTTP request but the probes must carry `Authorization: Bearer <key>`; others get 401.

    The comparison is of SHA-256 digests with `hmac.compare_digest`: constant time, whatever the length
    of what was sent.
    """

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.digest = None if api_key is None else hashlib.sha256(api_key.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # CORS preflights carry no credentials by design; the probes must answer an orchestrator.
        if (
            self.digest is None
            or scope["type"] != "http"
            or scope["path"] in PROBES
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await send_error(
                send,
                401,
                "missing or wrong API key: send Authorization: Bearer <key>",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        assert self.digest is not None
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                given = hashlib.sha256(token.strip().encode()).digest()
                return scheme.lower() == "bearer" and hmac.compare_digest(given, self.digest)
        return False


class BodySizeGuard:
    """Refuses request bodies over `max_bytes` with 413: by Content-Length up front, or, for a chunked
    body, as soon as what has arrived passes the cap. The body is read here and handed on whole: an
    error raised from inside the app's `receive` would come out as BentoML's generic 500."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_error(send, 413, self._message())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, self._message())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            body = b"".join(chunks)
            # BentoML's request timeout keeps each request's context, and with it this function, alive
            # for `traffic.timeout` seconds after the answer: holding the chunks would keep every body
            # of the last minute in memory.
            chunks.clear()
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _message(self) -> str:
        return f"request body larger than the limit of {self.max_bytes:,} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class LineBreakPathGuard:
    """A path with a line break in it (`%0A`, as in a customer id) gets the JSON 404 of any unknown
    resource. BentoML mounts the service's GET routes at `/` with a pattern whose `.` stops at a line
    break, so its router would answer such a path itself, in plain text."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\n" in scope["path"]:
            await send_error(send, 404, "no such resource: the path holds a line break")
            return
        await self.app(scope, receive, send)
