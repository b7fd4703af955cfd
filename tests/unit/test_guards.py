"""The body size guard, driven as an ASGI middleware: it hands the body on whole and keeps no hold on it
(BentoML keeps each request's `receive` alive for its traffic timeout after the answer)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from nextbest_serving.guards import BodySizeGuard, LineBreakPathGuard


class KeepingApp:
    """An app that reads the body and, like BentoML's request context, keeps `receive` afterwards."""

    def __init__(self) -> None:
        self.kept: list[Any] = []
        self.body = b""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.kept.append(receive)
        self.body = (await receive())["body"]


def reachable(root: object, depth: int = 4) -> list[object]:
    """Objects reachable from `root` within `depth` references."""
    seen, frontier = [root], [root]
    for _ in range(depth):
        frontier = [child for parent in frontier for child in gc.get_referents(parent)]
        seen += frontier
    return seen


def run(guard: BodySizeGuard, chunks: list[bytes]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": []}
    asyncio.run(guard(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_the_body_is_handed_on_whole_and_not_kept() -> None:
    app = KeepingApp()
    parts = [bytes([i]) * 100_000 for i in range(3)]
    run(BodySizeGuard(app, max_bytes=1_000_000), parts)  # type: ignore[arg-type]
    assert app.body == b"".join(parts)
    held = [o for o in reachable(app.kept[0]) if isinstance(o, bytes) and len(o) >= 100_000]
    assert held == []


def test_a_body_over_the_limit_is_refused_with_413() -> None:
    app = KeepingApp()
    sent = run(BodySizeGuard(app, max_bytes=150_000), [b"x" * 100_000, b"x" * 100_000])  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert b"150,000" in sent[1]["body"]
    assert app.kept == []  # the app never saw the request


def test_a_path_with_a_line_break_is_a_json_404_and_others_pass() -> None:
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    guard = LineBreakPathGuard(app)
    asyncio.run(guard({"type": "http", "path": "/customers/a\nb", "method": "GET"}, receive, send))
    asyncio.run(guard({"type": "http", "path": "/customers/ab", "method": "GET"}, receive, send))
    assert reached == ["/customers/ab"]
    assert sent[0]["status"] == 404
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert b"line break" in sent[1]["body"]
