"""Adaptive batching of concurrent requests into one model call.

A batch closes when it holds `max_batch_size` items or `max_latency_ms` after its first item arrived,
whichever comes first. Under load the batches fill while the model is busy, and per-request overhead
(tables, encoding, a forward pass) is paid once per batch.

The window is adaptive: a batch waits for company only when the previous one found some (it held more
than one item). A lone client, whose requests never overlap, would otherwise pay the whole window on
every request for nothing.

The model runs on the event loop itself, one batch at a time, and the loop serves its other callbacks
(parsing, answering, probes) between batches. A model thread looks more concurrent, but on CPython it
fights the loop for the GIL: each time the loop waits on a socket, it queues behind the model thread's
bytecode to get the GIL back (measured: docs/benchmarks.md, "Measurements behind the serving defaults").
The price: the loop does nothing else while a batch is scored,
so a batch holds at most `max_batch_size` items (tens of milliseconds of work), and a request's deadline
is noticed at the end of the batch being scored, not in the middle of it.

Why not BentoML's own `batchable` API: reaching it from `/rank` is an HTTP call back into the same
server, through the API key and body size guards, counted against the concurrency limit; this keeps the
batching inside the process, with the same two knobs.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Collects items from concurrent callers and runs `process` on them in batches, on the event loop.

    Args:
        process: scores a batch; returns one result per item, in order, or an exception in place of the
            result of an item that could not be scored (the others still get theirs).
    """

    def __init__(
        self,
        process: Callable[[list[In]], Sequence[Out | Exception]],
        max_batch_size: int,
        max_latency_ms: float,
    ) -> None:
        if max_batch_size < 1 or max_latency_ms < 0:
            raise ValueError("max_batch_size must be at least 1 and max_latency_ms not negative")
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000.0
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches_processed = 0
        self.items_processed = 0

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """The results of `items` (which may be split across batches); raises the first failed item's
        exception."""
        results = await self.outcomes(items)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return cast(list[Out], results)

    async def outcomes(self, items: Sequence[In]) -> list[Out | Exception]:
        """The result of each of `items`, or the exception it failed with, in the order of `items`."""
        queue = self._started()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Out]] = [loop.create_future() for _ in items]
        for item, future in zip(items, futures, strict=True):
            queue.put_nowait((item, future))
        try:
            # The worker fails items with an `Exception` only (see `_run`).
            return cast(list[Out | Exception], await asyncio.gather(*futures, return_exceptions=True))
        finally:
            for future in futures:  # a caller that gave up (deadline) frees its place in a batch
                future.cancel()

    async def close(self) -> None:
        """Stops the worker; queued items are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

    def _started(self) -> asyncio.Queue[tuple[In, asyncio.Future[Out]]]:
        # Created on first use: the queue and the task belong to the event loop of the serving worker.
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            # In a context of its own: the first caller's context would keep that request alive (body
            # included) for the life of the worker, and put every batch's work under its trace.
            self._worker = asyncio.get_running_loop().create_task(
                self._run(self._queue), context=contextvars.Context()
            )
        return self._queue

    async def _run(self, queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]]) -> None:
        loop = asyncio.get_running_loop()
        concurrent = False
        while True:
            batch = [await queue.get()]
            closes = loop.time() + (self.max_latency if concurrent else 0.0)
            while len(batch) < self.max_batch_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = closes - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            concurrent = len(batch) > 1
            live = [(item, future) for item, future in batch if not future.done()]
            if not live:
                continue
            self.batches_processed += 1
            self.items_processed += len(live)
            try:
                results = self.process([item for item, _ in live])
            except Exception as exc:  # the whole batch failed: every caller learns why
                results = [exc] * len(live)
            for (_, future), result in zip(live, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            await asyncio.sleep(0)  # the loop's other callbacks (deadlines, parsing, probes) run now
