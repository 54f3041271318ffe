"""The router's micro-batcher: callers arriving together share one batch call and each gets its own result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from services.runtime.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """A batch function that upper-cases texts and records the batches it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.delay = threading.Event()
        self.delay_s = delay_s

    def __call__(self, texts: Sequence[str]) -> list[str]:
        self.batches.append(list(texts))
        if self.delay_s:
            self.delay.wait(self.delay_s)
        return [text.upper() for text in texts]


async def test_callers_arriving_together_share_one_batch_and_get_their_own_results() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, window_s=0.01, max_batch=32)
    texts = [f"text {i}" for i in range(10)]
    results = await asyncio.gather(*(batcher.submit(text) for text in texts))
    assert results == [text.upper() for text in texts]
    assert recorder.batches == [texts]
    await batcher.aclose()


async def test_a_burst_larger_than_max_batch_is_split_into_full_batches() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, window_s=0.01, max_batch=4, concurrency=1)
    texts = [str(i) for i in range(10)]
    assert await asyncio.gather(*(batcher.submit(text) for text in texts)) == texts
    assert [len(batch) for batch in recorder.batches] == [4, 4, 2]
    await batcher.aclose()


async def test_requests_arriving_while_a_batch_computes_gather_into_the_next() -> None:
    recorder = Recorder(delay_s=0.05)
    batcher = MicroBatcher(recorder, window_s=0.0, max_batch=32, concurrency=1)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0.01)
    rest = await asyncio.gather(*(batcher.submit(text) for text in "bcd"))
    assert (await first, rest) == ("A", ["B", "C", "D"])
    assert recorder.batches == [["a"], ["b", "c", "d"]]
    await batcher.aclose()


async def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def broken(texts: Sequence[str]) -> list[str]:
        raise ValueError("model gone")

    batcher: MicroBatcher[str, str] = MicroBatcher(broken, window_s=0.001)
    results = await asyncio.gather(batcher.submit("a"), batcher.submit("b"), return_exceptions=True)
    assert [type(result) for result in results] == [ValueError, ValueError]
    await batcher.aclose()


async def test_a_closed_batcher_refuses_new_items() -> None:
    batcher = MicroBatcher(Recorder())
    await batcher.aclose()
    with pytest.raises(BatcherClosed):
        await batcher.submit("late")


async def test_callers_waiting_when_the_batcher_closes_are_told_so() -> None:
    batcher = MicroBatcher(Recorder(delay_s=0.2), window_s=10.0, concurrency=1)
    computing = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.submit("b"))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    for caller in (computing, queued):
        with pytest.raises(BatcherClosed):
            await caller


async def test_a_lone_request_does_not_wait_for_the_window() -> None:
    batcher = MicroBatcher(Recorder(), window_s=10.0)
    assert await asyncio.wait_for(batcher.submit("a"), timeout=1.0) == "A"
    await batcher.aclose()


async def test_a_caller_submitting_again_as_soon_as_it_is_answered_is_answered_again() -> None:
    # woken by the runner's last result, the caller submits before that runner's task has finished: the finished
    # runner must not be counted as gathering the new item (this waited for ever before it was fixed)
    batcher = MicroBatcher(Recorder(), window_s=0.01, concurrency=1)
    async with asyncio.timeout(5):  # in this task, unlike wait_for, so nothing runs between result and submit
        for text in ("first", "second", "third"):
            assert await batcher.submit(text) == text.upper()
    await batcher.aclose()
