"""Progress lines: rate-limited, with share, rate and ETA."""

from assets.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_every_interval_with_share_rate_and_eta():
    clock, logs = Clock(), []
    progress = Progress(logs.append, "test split", 1000, "texts", every_s=10, clock=clock)
    for step in range(1, 11):
        clock.now += 2.5  # 100 texts every 2.5 s: 40 texts/s
        progress.update(step * 100)
    progress.finish()
    assert logs == [
        "test split: 400 of 1,000 texts (40%) at 40.0 texts/s, ETA 15 s",
        "test split: 800 of 1,000 texts (80%) at 40.0 texts/s, ETA 5 s",
        "test split done: 1,000 texts in 25 s (40.0 texts/s)",
    ]


def test_unknown_total_reports_amount_and_rate_only():
    clock, logs = Clock(), []
    progress = Progress(logs.append, "downloading x", 0, "MB", every_s=1, clock=clock)
    clock.now += 120
    progress.update(12.5)
    assert logs == ["downloading x: 12.50 MB at 0.1 MB/s"]
