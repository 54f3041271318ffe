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


class Poisoned(Recorder):
    """Upper-cases texts, but raises for any batch holding one that starts with "poison"."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> list[str]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            results = super().__call__(texts)
        finally:
            with self._lock:
                self.running -= 1
        if any(text.startswith("poison") for text in texts):
            raise ValueError(f"cannot read {list(texts)}")
        return results


async def test_one_poison_item_fails_its_own_caller_and_the_others_get_their_results() -> None:
    poisoned = Poisoned()
    batcher = MicroBatcher(poisoned, window_s=0.01, max_batch=32)
    results = await asyncio.gather(
        *(batcher.submit(text) for text in ("a", "b", "poison", "c")), return_exceptions=True
    )
    assert results[:2] == ["A", "B"] and results[3] == "C"
    assert isinstance(results[2], ValueError) and str(results[2]) == "cannot read ['poison']"
    assert poisoned.batches == [["a", "b", "poison", "c"], ["a"], ["b"], ["poison"], ["c"]]
    assert (batcher.retries, batcher.batches, batcher.items) == (4, 3, 3)
    await batcher.aclose()


async def test_a_batch_function_that_always_raises_fails_every_caller_with_its_own_call_and_stops() -> None:
    calls: list[list[str]] = []

    def broken(texts: Sequence[str]) -> list[str]:
        calls.append(list(texts))
        raise ValueError(f"model gone for {list(texts)}")

    batcher: MicroBatcher[str, str] = MicroBatcher(broken, window_s=0.001)
    texts = ["a", "b", "c"]
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(text) for text in texts), return_exceptions=True), timeout=5
    )
    assert [str(result) for result in results] == [f"model gone for ['{text}']" for text in texts]
    assert all(isinstance(result, ValueError) for result in results)
    assert calls == [texts, ["a"], ["b"], ["c"]]  # the batch once, then each item once: no loop
    assert (batcher.retries, batcher.batches, batcher.items) == (3, 0, 0)
    await batcher.aclose()


async def test_a_lone_failing_item_is_not_run_again() -> None:
    poisoned = Poisoned()
    batcher = MicroBatcher(poisoned, window_s=0.001)
    with pytest.raises(ValueError, match="poison"):
        await batcher.submit("poison")
    assert poisoned.batches == [["poison"]] and batcher.retries == 0
    await batcher.aclose()


async def test_results_stay_in_order_around_poison_items_and_retries_keep_the_concurrency_bound() -> None:
    poisoned = Poisoned(delay_s=0.002)
    batcher = MicroBatcher(poisoned, window_s=0.01, max_batch=4, concurrency=2)
    texts = [f"poison {i}" if i in (2, 7, 8) else f"text {i}" for i in range(12)]
    results = await asyncio.gather(*(batcher.submit(text) for text in texts), return_exceptions=True)
    for text, result in zip(texts, results, strict=True):
        if text.startswith("poison"):
            assert isinstance(result, ValueError) and str(result) == f"cannot read [{text!r}]"
        else:
            assert result == text.upper()
    failed = [batch for batch in poisoned.batches if len(batch) > 1 and any(t.startswith("poison") for t in batch)]
    assert batcher.items == 9 and batcher.retries == sum(len(batch) for batch in failed)  # each item again, alone
    assert poisoned.most_running <= 2
    await batcher.aclose()


async def test_a_batch_function_that_drops_an_item_fails_only_that_item() -> None:
    def drops_blanks(texts: Sequence[str]) -> list[str]:
        return [text.upper() for text in texts if text]

    batcher: MicroBatcher[str, str] = MicroBatcher(drops_blanks, window_s=0.01)
    results = await asyncio.gather(*(batcher.submit(text) for text in ("a", "", "b")), return_exceptions=True)
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], RuntimeError) and "0 results for 1 items" in str(results[1])
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
