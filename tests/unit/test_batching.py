"""The service's greedy micro-batcher: a lone request runs at once, a crowd runs in batches,
overload is refused at once, and every request gets its own results in order."""

import asyncio
import threading

import numpy as np
import pytest

from bento.batching import GreedyBatcher, Overloaded
from tests.loops import run_in_own_thread


class Model:
    """Records the batches it runs; the first call can be held until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.started.set()
        assert self.release.wait(10)
        return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


def test_a_lone_request_runs_at_once_as_its_own_batch():
    model = Model()
    batcher = GreedyBatcher(model, max_batch=64)
    result = run_in_own_thread(batcher.submit(["abc", "de"]))
    assert model.batches == [["abc", "de"]]
    assert result[:, 0].tolist() == [3, 2]


def test_requests_arriving_while_the_model_is_busy_run_together_in_order():
    async def scenario():
        model = Model(hold_first=True)
        batcher = GreedyBatcher(model, max_batch=5)
        first = asyncio.create_task(batcher.submit(["first"]))
        await asyncio.to_thread(model.started.wait, 10)
        waiting = [asyncio.create_task(batcher.submit([f"t{i}", f"tt{i}"])) for i in range(3)]
        await asyncio.sleep(0)  # let them queue
        model.release.set()
        results = await asyncio.gather(first, *waiting)
        return model.batches, results

    batches, results = run_in_own_thread(scenario())
    # while "first" ran, three requests queued: two fit in a batch of at most 5 texts
    assert batches == [["first"], ["t0", "tt0", "t1", "tt1"], ["t2", "tt2"]]
    for i, result in enumerate(results[1:]):
        assert result[:, 0].tolist() == [len(f"t{i}"), len(f"tt{i}")]


def test_overload_is_refused_at_once_and_the_queue_recovers():
    async def scenario():
        model = Model(hold_first=True)
        batcher = GreedyBatcher(model, max_batch=4, max_queue=3)
        busy = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.to_thread(model.started.wait, 10)
        queued = asyncio.create_task(batcher.submit(["b", "c"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="2 texts are waiting"):
            await batcher.submit(["d", "e"])
        model.release.set()
        await asyncio.gather(busy, queued)
        return await batcher.submit(["f"]), batcher.queued_texts

    result, left = run_in_own_thread(scenario())
    assert result.shape == (1, 2) and left == 0


def test_a_failing_batch_fails_its_requests_and_not_the_next():
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return np.zeros((len(texts), 2), dtype=np.float32)

    async def scenario():
        batcher = GreedyBatcher(flaky)
        with pytest.raises(RuntimeError, match="model broke"):
            await batcher.submit(["x"])
        return await batcher.submit(["y"])

    assert run_in_own_thread(scenario()).shape == (1, 2)
