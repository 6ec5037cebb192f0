"""A client's steady traffic against a service under test, from a thread of its own, and waiting
for what the service does meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Traffic:
    """Requests as fast as answers come, a new connection each (so every worker gets some);
    `texts(i)` gives the i-th request's texts. Records every text sent, every status, and for
    each answered request the tag of the model behind each prediction."""

    def __init__(self, url: str, texts: Callable[[int], list[str]]) -> None:
        self.url = url
        self.texts = texts
        self.sent: list[str] = []
        self.statuses: list[int] = []
        self.answers: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop.is_set():
                texts = self.texts(len(self.statuses))
                self.sent += texts
                response = client.post(f"{self.url}/classify", json={"texts": texts})
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.answers.append([p["model"] for p in response.json()])

    def served(self, last: int = 20) -> set[str]:
        """The models that answered the last requests."""
        return {tag for answer in self.answers[-last:] for tag in answer}

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def wait_for(condition, limit_s: float = 30, what: str = "condition"):
    """`condition()`'s first truthy value, polled; TimeoutError naming `what` after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} did not happen within {limit_s:.0f} s")
