"""Micro-batching of a blocking batch function: callers that arrive within a few milliseconds share one thread call.

An embedding model costs a few ms of CPU per call and much less per text in a batch, so under load a stage (the
router's intent classifier, the governor's PII and abuse models, the answerer's output toxicity) runs whatever
arrived together in one worker-thread call; each caller awaits its own result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_WINDOW_S: Final = 0.002
DEFAULT_MAX_BATCH: Final = 32
# batches computed at once: onnxruntime releases the GIL, so two use both cores of a 2-core box
DEFAULT_CONCURRENCY: Final = 2


class BatcherClosed(RuntimeError):
    """The batcher was closed before this item's batch ran; the caller may retry elsewhere."""


class MicroBatcher(Generic[Item, Result]):
    """Runs `batch_fn` in worker threads on up to `max_batch` items at once, `concurrency` batches at a time.

    When nothing is computing, a batch starts at once: a lone request waits for nobody. While a batch computes,
    the next starts when it is full or its oldest item has waited `window_s`, and items arriving while every
    runner computes gather into the next batch: batches grow with the load. `batch_fn` must be thread-safe
    and return one result per item, in order.

    When a batch of several items raises, each of its items runs again in a call of its own (counted in
    `retries`), so an item that makes `batch_fn` raise fails its own caller alone and the others get their results.
    """

    def __init__(
        self,
        batch_fn: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if window_s < 0 or max_batch < 1 or concurrency < 1:
            raise ValueError("window_s must be at least 0, max_batch and concurrency at least 1")
        self._batch_fn = batch_fn
        self.window_s = window_s
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._pending: list[tuple[Item, asyncio.Future[tuple[Result, float]], float]] = []
        self._runners: set[asyncio.Task[None]] = set()
        self._computing = 0
        self._closed = False
        # calls of batch_fn that returned, the items they answered, and the items run again alone after their
        # batch raised
        self.batches = 0
        self.items = 0
        self.retries = 0

    async def submit(self, item: Item) -> Result:
        """The result for one item, computed in a batch with whatever arrives alongside it."""
        result, _ = await self.submit_timed(item)
        return result

    async def submit_timed(self, item: Item) -> tuple[Result, float]:
        """The result for one item and its share of the batch's compute in ms (the CPU time of the batch's
        call of `batch_fn` divided by its size; of its own call when it ran again alone): the work done for this
        item, without the time it waited."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        future: asyncio.Future[tuple[Result, float]] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future, time.monotonic()))
        # another runner only when the ones gathering cannot take everything waiting
        gathering = len(self._runners) - self._computing
        if len(self._runners) < self.concurrency and len(self._pending) > gathering * self.max_batch:
            runner = asyncio.create_task(self._run())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        return await future

    async def aclose(self) -> None:
        """Stops taking items; callers still waiting, in the batch in flight or after it, get BatcherClosed."""
        self._closed = True
        runners = list(self._runners)
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._fail(self._pending, BatcherClosed("the batcher closed before this item was batched"))
        self._pending = []

    async def _run(self) -> None:
        try:
            while self._pending:
                waited = time.monotonic() - self._pending[0][2]
                # an idle batcher starts at once; while a batch computes, the next one gathers for up to window_s
                if self._computing and len(self._pending) < self.max_batch and waited < self.window_s:
                    await asyncio.sleep(self.window_s - waited)
                if not self._pending:
                    return  # another runner took them
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                self._computing += 1
                try:
                    await self._run_batch(batch)
                finally:
                    self._computing -= 1
        finally:
            # leave the count now, not in a done callback: a caller woken by this runner's last result may submit
            # before that callback runs, and would otherwise count a finished runner as gathering its item (and wait
            # for ever: no runner would be started for it)
            self._runners.discard(asyncio.current_task())

    def _timed_batch(self, items: Sequence[Item]) -> tuple[Sequence[Result], float]:
        # CPU time of this worker thread: not the time it waited for the GIL or a core (onnxruntime's work is
        # counted when it runs in the calling thread, as with one intra-op thread, the embedder's default)
        started = time.thread_time()
        results = self._batch_fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results, (time.thread_time() - started) * 1000

    async def _run_batch(self, batch: list[tuple[Item, asyncio.Future[tuple[Result, float]], float]]) -> None:
        try:
            error = await self._compute(batch)
            if error is None:
                return
            if len(batch) == 1:
                self._fail(batch, error)
                return
            # one item that makes batch_fn raise must not fail the others: each runs again alone, in this runner
            # (so no more than `concurrency` calls at once), and gets its own result or its own exception
            for entry in batch:
                if entry[1].done():
                    continue  # its caller gave up waiting
                self.retries += 1
                alone_error = await self._compute([entry])
                if alone_error is not None:
                    self._fail([entry], alone_error)
        except asyncio.CancelledError:
            self._fail(batch, BatcherClosed("the batcher closed while this item's batch ran"))
            raise

    async def _compute(self, batch: list[tuple[Item, asyncio.Future[tuple[Result, float]], float]]) -> Exception | None:
        """Calls batch_fn on the batch in a worker thread and answers its callers; returns the error instead when
        the call raised, leaving the callers waiting."""
        try:
            results, compute_ms = await asyncio.to_thread(self._timed_batch, [item for item, _, _ in batch])
        except Exception as error:
            return error
        self.batches += 1
        self.items += len(batch)
        share_ms = compute_ms / len(batch)
        for (_, future, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result((result, share_ms))
        return None

    @staticmethod
    def _fail(batch: Sequence[tuple[Item, asyncio.Future[tuple[Result, float]], float]], error: BaseException) -> None:
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(error)
