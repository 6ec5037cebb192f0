"""Event loops for tests that drive async code from a synchronous test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def run_in_own_thread(
    coroutine: Coroutine[Any, Any, Any],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> Any:
    """`coroutine` run on a fresh event loop (`loop_factory`'s, asyncio's by default) in a thread
    of its own: the browser tests' session-wide playwright loop may be running on the main
    thread."""

    def target() -> Any:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coroutine)

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(target).result()
