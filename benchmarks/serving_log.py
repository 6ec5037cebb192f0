"""What reading a monitoring window costs, by the length of the log's history: `serving_log`'s
reader (the window's hourly files, parsed by polars) against reading every file and filtering by
time (how the log was read before), on a 30-day log and on its last day alone, side by side in
one run. Each read runs in a fresh process, which reports its time and peak memory.

    python benchmarks/serving_log.py --records 1000000 --days 30 --window-hours 24
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITERS = ("replica-a-101-aaaaaa", "replica-b-202-bbbbbb")


def write_log(folder: Path, records: int, days: float, now: float, seed: int = 0) -> int:
    """`records` predictions spread evenly over `days` before `now`, in the service's layout
    (one file per hour and writer); returns the bytes written."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    span = days * 86400
    step = span / records
    lines: dict[Path, list[str]] = {}
    for i in range(records):
        ts = now - span + i * step
        hour = datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d%H")
        path = folder / f"predictions-{hour}-{WRITERS[i % 2]}.jsonl"
        text = f"@user tweet {i}: " + "word " * rng.randint(3, 30)
        p = round(rng.random(), 4)
        record = {
            "ts": ts,
            "model_tag": "textops-classifier:bench",
            "text_length": len(text),
            "label": "hate" if p > 0.5 else "not-hate",
            "probabilities": {"not-hate": round(1 - p, 4), "hate": p},
            "latency_ms": round(rng.uniform(5, 60), 3),
            "request_id": f"{i:016x}",
            "text": text,
        }
        lines.setdefault(path, []).append(json.dumps(record, ensure_ascii=False))
    for path, content in lines.items():
        path.write_text("\n".join(content) + "\n")
    return sum(p.stat().st_size for p in folder.iterdir())


def read_every_file(folder: Path, since: float) -> int:
    """The reader before, as it was: the contents of every log file in memory, then each line
    parsed and filtered by time."""
    import polars as pl

    contents = [
        path.read_bytes().decode("utf-8", errors="replace")
        for path in sorted(folder.iterdir(), key=lambda p: p.name)
        if path.name.startswith("predictions-") and path.name.endswith(".jsonl")
    ]
    rows = []
    for content in contents:
        for line in content.split("\n"):
            if not line:
                continue
            record = json.loads(line)
            if record["ts"] < since:
                continue
            record["probabilities"] = json.dumps(record.get("probabilities", {}))
            rows.append(record)
    return pl.DataFrame(rows).height


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(reader: str, folder: str, since: float) -> None:
    """Child process: one read, then its time, rows, files and peak memory as JSON."""
    import polars  # noqa: F401 - imported before the baseline is taken, as in both readers

    from assets.monitoring.log_window import read_window

    baseline = peak_mb()
    started = time.perf_counter()
    if reader == "window":
        read = read_window(folder, since)
        rows, files = read.frame.height, read.files
    else:
        rows, files = read_every_file(Path(folder), since), len(list(Path(folder).iterdir()))
    seconds = time.perf_counter() - started
    peak = peak_mb()
    print(json.dumps({"seconds": seconds, "rows": rows, "files": files, "base_mb": baseline,
                      "peak_mb": peak}))  # fmt: skip


def run(reader: str, folder: Path, since: float) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--measure", reader, str(folder), str(since)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--window-hours", type=float, default=24)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        reader, folder, since = args.measure
        measure(reader, folder, float(since))
        return
    now = time.time()
    since = now - args.window_hours * 3600
    with tempfile.TemporaryDirectory() as scratch:
        history = Path(scratch) / "history"
        size = write_log(history, args.records, args.days, now)
        recent = Path(scratch) / "recent"
        recent.mkdir()
        for path in history.iterdir():
            if path.name >= f"predictions-{datetime.fromtimestamp(since, UTC):%Y%m%d%H}":
                shutil.copy(path, recent / path.name)
        recent_size = sum(p.stat().st_size for p in recent.iterdir())
        print(
            f"{args.records:,} records over {args.days:g} days: {size / 1e6:.0f} MB in "
            f"{len(list(history.iterdir()))} files; its last day alone: "
            f"{recent_size / 1e6:.0f} MB; window {args.window_hours:g} h\n"
        )
        print("| log | reader | files read | rows kept | seconds | peak MB (after imports) |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        results = {}
        for label, folder in ((f"{args.days:g} days", history), ("1 day", recent)):
            for reader, name in (("window", "window files (now)"), ("all", "every file (before)")):
                r = results[label, reader] = run(reader, folder, since)
                print(
                    f"| {label} | {name} | {r['files']} | {r['rows']:,} | {r['seconds']:.2f} | "
                    f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['base_mb']:.0f}) |"
                )
        long, short = results[f"{args.days:g} days", "window"], results["1 day", "window"]
        before = results[f"{args.days:g} days", "all"]

        def grown(r: dict) -> float:
            return max(r["peak_mb"] - r["base_mb"], 1.0)

        print(
            f"\nwindow reader, {args.days:g}-day log / 1-day log: time "
            f"{long['seconds'] / short['seconds']:.2f}x, memory above imports "
            f"{grown(long) / grown(short):.2f}x; on the {args.days:g}-day log, before / now: "
            f"time {before['seconds'] / long['seconds']:.1f}x, memory above imports "
            f"{grown(before) / grown(long):.1f}x"
        )


if __name__ == "__main__":
    main()
