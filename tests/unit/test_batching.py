"""MicroBatcher: concurrent callers share model calls, a lone caller never waits for company, and one
bad item fails only its own caller."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from nextbest_serving.batching import MicroBatcher

WINDOW_MS = 200.0  # long enough that waiting for it, or not, is unmistakable


class Recorder:
    """A `process` that doubles numbers, fails on negative ones and remembers each batch it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.started = threading.Event()

    def __call__(self, items: list[int]) -> list[int | Exception]:
        self.started.set()
        self.batches.append(list(items))
        if self.delay:
            threading.Event().wait(self.delay)
        return [ValueError(f"negative: {i}") if i < 0 else 2 * i for i in items]


def batcher(recorder: Recorder, max_batch_size: int = 64) -> MicroBatcher[int, int]:
    return MicroBatcher(recorder, max_batch_size, WINDOW_MS)


def test_a_lone_caller_is_scored_at_once_without_waiting_for_the_window() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        micro = batcher(recorder)
        started = loop.time()
        for i in range(5):
            assert await micro.submit([i]) == [2 * i]
        elapsed = loop.time() - started
        await micro.close()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert recorder.batches == [[0], [1], [2], [3], [4]]
    assert elapsed < WINDOW_MS / 1000.0  # five requests took less than one window


def test_requests_arriving_while_the_model_is_busy_are_scored_together() -> None:
    recorder = Recorder(delay=0.05)

    async def scenario() -> list[list[int]]:
        micro = batcher(recorder)
        first = asyncio.ensure_future(micro.submit([1]))
        await asyncio.get_running_loop().run_in_executor(None, recorder.started.wait)
        rest = await asyncio.gather(*(micro.submit([i]) for i in range(2, 10)))
        assert await first == [2]
        await micro.close()
        return rest

    rest = asyncio.run(scenario())
    assert rest == [[2 * i] for i in range(2, 10)]
    assert recorder.batches == [[1], list(range(2, 10))]


def test_a_batch_closes_at_its_size_limit() -> None:
    recorder = Recorder()

    async def scenario() -> list[int]:
        micro = batcher(recorder, max_batch_size=4)
        answers = await micro.submit(list(range(10)))
        await micro.close()
        return answers

    assert asyncio.run(scenario()) == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]


def test_the_event_loop_serves_other_callers_between_batches() -> None:
    recorder = Recorder(delay=0.02)
    seen: list[int] = []

    async def scenario() -> None:
        micro = batcher(recorder, max_batch_size=2)
        scoring = asyncio.ensure_future(micro.submit(list(range(6))))
        while not scoring.done():  # another request's work on the same loop, e.g. a probe
            seen.append(len(recorder.batches))
            await asyncio.sleep(0)
        await micro.close()

    asyncio.run(scenario())
    assert {1, 2} <= set(seen)  # it ran after the first batch and after the second, before the third


def test_a_bad_item_fails_only_its_own_caller() -> None:
    recorder = Recorder(delay=0.05)

    async def scenario() -> tuple[list[int] | BaseException, list[int] | BaseException]:
        micro = batcher(recorder)
        blocker = asyncio.ensure_future(micro.submit([0]))
        await asyncio.get_running_loop().run_in_executor(None, recorder.started.wait)
        answers = await asyncio.gather(micro.submit([3]), micro.submit([-1]), return_exceptions=True)
        await blocker
        await micro.close()
        return answers

    good, bad = asyncio.run(scenario())
    assert good == [6]
    assert isinstance(bad, ValueError)
    assert "negative: -1" in str(bad)


def test_the_worker_does_not_keep_the_first_callers_context() -> None:
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")
    seen: list[str] = []

    def process(items: list[int]) -> list[int]:
        seen.append(request.get())
        return items

    async def scenario() -> None:
        micro: MicroBatcher[int, int] = MicroBatcher(process, 64, WINDOW_MS)
        request.set("the first request, with its body")  # what the server's context holds per request
        await micro.submit([1])
        await micro.close()

    asyncio.run(scenario())
    assert seen == ["none"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), 0, 1.0)
