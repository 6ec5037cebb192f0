"""Greedy micro-batching for the service: a request runs as soon as the model is free, and the
requests that arrive while it is busy run together next. A lone client never waits for company
(no batching window), and a crowd is served in batches as large as the backlog. Kept over
BentoML's adaptive batching, which ties with it on throughput (benchmarks/adaptive_batching.py,
measured side by side by benchmarks/serving.py), for the bounded queue that refuses at once
with 429 (docs/serving.md)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Overloaded(Exception):
    """More texts are waiting than the service takes on; the client should retry later."""


class GreedyBatcher:
    """Coalesces concurrent requests into batches of at most `max_batch` texts, run one at a
    time on one thread (the model uses the cores itself), while the event loop keeps taking
    requests. Refuses a request at once when `max_queue` texts are already waiting."""

    def __init__(
        self,
        run: Callable[[list[str]], np.ndarray],
        max_batch: int = 64,
        max_queue: int = 4096,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._pending: collections.deque[tuple[list[str], asyncio.Future]] = collections.deque()
        self._queued = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @property
    def queued_texts(self) -> int:
        return self._queued

    async def submit(self, texts: Sequence[str]) -> np.ndarray:
        """Results for `texts`, in order, from whichever batch they ran in."""
        if self._queued + len(texts) > self.max_queue:
            raise Overloaded(
                f"{self._queued} texts are waiting (at most {self.max_queue}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._drain())
        future: asyncio.Future = loop.create_future()
        self._pending.append((list(texts), future))
        self._queued += len(texts)
        assert self._wakeup is not None
        self._wakeup.set()
        return await future

    def _take(self) -> list[tuple[list[str], asyncio.Future]]:
        """Whole requests from the front of the queue, up to max_batch texts (at least one)."""
        taken, size = [], 0
        while self._pending and (not taken or size + len(self._pending[0][0]) <= self.max_batch):
            texts, future = self._pending.popleft()
            self._queued -= len(texts)
            if future.cancelled():  # the client went away while waiting
                continue
            taken.append((texts, future))
            size += len(texts)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                taken = self._take()
                if not taken:
                    continue
                texts = [text for request, _ in taken for text in request]
                try:
                    results = await loop.run_in_executor(self._executor, self.run, texts)
                except Exception as error:  # every waiting request gets the same failure
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(error)
                    continue
                start = 0
                for request, future in taken:
                    if not future.done():
                        future.set_result(results[start : start + len(request)])
                    start += len(request)
