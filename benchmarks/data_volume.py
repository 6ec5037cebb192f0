"""What the data path costs by volume: `raw_texts`, its checks, `text_splits` and its checks
materialized through Dagster on a CSV of N labelled tweets, for each N given, with each step's
time and peak memory and how time per row grows with N.

    python benchmarks/data_volume.py                 # 9,000, 900,000 and 10,000,000 rows
    python benchmarks/data_volume.py 9000 270000 --workdir /big/disk/tmp

The data: TweetEval hate's training tweets (../shared/data/tweeteval/hate, else the copy shipped
in the package) repeated until N rows, every row suffixed with its copy number so texts stay
distinct (deduplication keeps them all), written as a quoted CSV with `text` and `label` columns:
a source without splits, so `text_splits` makes its seeded stratified split, as a production
export would.

Each step runs in a fresh Python process of its own (`--step`), with the in-process executor of
`dg.materialize`, against one Dagster instance and one artifact store per N: a step reads what
the step before it materialized, exactly as `dagster asset materialize` runs its steps in
separate processes. A process per step is what makes peak memory a per-step figure: the child
reports its own high-water mark (VmHWM, which unlike ru_maxrss is not inherited across fork and
exec), imports included, since a step's process pays for them too. Step time is the step's own,
from STEP_START to STEP_SUCCESS in the run's event log, without interpreter start-up or imports,
as the Dagster UI shows it. A step whose blocking check fails stops that size, as it would stop
a run. Give --workdir a disk with room for the CSV (about 130 bytes a row) and the store (about
the same again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_TWEETEVAL = ROOT.parent / "shared" / "data" / "tweeteval" / "hate"
DEFAULT_SIZES = (9_000, 900_000, 10_000_000)
# In run order; each reads what the ones before it materialized.
STEPS = ("raw_texts", "raw_texts_checks", "text_splits", "text_splits_checks")
WRITE_CHUNK_ROWS = 1_000_000  # the generator's own memory stays small at 10 M rows


def step_environment(workdir: Path) -> dict[str, str]:
    """Offline, nothing written outside `workdir`, no landed files, no W&B."""
    return os.environ | {
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        "TEXTOPS_HOME": str(workdir / "home"),
        "TEXTOPS_CACHE": str(workdir / "cache"),
        "TEXTOPS_LANDING": str(workdir / "landing"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "GX_ANALYTICS_ENABLED": "false",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }


def tweeteval_train(folder: Path):
    """TweetEval's training tweets and label ids, read as raw_texts reads the folder."""
    import polars as pl

    from assets.data.sources.formats import read_tweeteval, tweeteval_file_names

    files = {name: (folder / name).read_bytes() for name in tweeteval_file_names()}
    frame = read_tweeteval(files, str(folder)).frame
    return frame.filter(pl.col("source_split") == "train").select("text", "label")


def write_dataset(path: Path, rows: int, base) -> int:
    """`rows` rows of `base` repeated, each text suffixed with its copy number, as a CSV with
    every field quoted; returns the bytes written."""
    import polars as pl

    with path.open("wb") as handle:
        for start in range(0, rows, WRITE_CHUNK_ROWS):
            index = pl.int_range(start, min(start + WRITE_CHUNK_ROWS, rows), eager=True)
            chunk = pl.DataFrame(
                {
                    "text": base["text"].gather(index % base.height),
                    "copy": index // base.height,
                    "label": base["label"].gather(index % base.height),
                }
            ).select(
                text=pl.concat_str(pl.col("text"), pl.lit(" "), pl.col("copy").cast(pl.String)),
                label=pl.col("label"),
            )
            chunk.write_csv(handle, include_header=start == 0, quote_style="always")
    return path.stat().st_size


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_step(step: str, source: str, store_root: str) -> None:
    """Child process: materialize one step, then print its time, peak memory and checks."""
    import logging

    import dagster as dg

    from orchestration import definitions
    from orchestration.resources import LocalArtifactStore

    logging.disable(logging.INFO)  # the run's event log lines would bury the report
    asset = step.removesuffix("_checks")
    if step.endswith("_checks"):
        selection = dg.AssetSelection.checks_for_assets(asset)
    else:
        selection = dg.AssetSelection.assets(asset).without_checks()
    config = {"ops": {"raw_texts": {"config": {"source": source}}}} if step == "raw_texts" else None
    instance = dg.DagsterInstance.get()
    base = peak_mb()
    result = dg.materialize(
        [*definitions.ASSETS, *definitions.ASSET_CHECKS],
        selection=selection,
        resources=definitions.pipeline_resources(LocalArtifactStore(root=store_root)),
        run_config=config,
        instance=instance,
        raise_on_error=False,
    )
    times: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event and event.event_type_value in ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE"):
            times[event.event_type_value] = entry.timestamp
    end = times.get("STEP_SUCCESS", times.get("STEP_FAILURE", 0.0))
    checks = {
        e.check_name: [e.passed, e.severity.value] for e in result.get_asset_check_evaluations()
    }
    report = {
        "success": result.success,
        "seconds": end - times.get("STEP_START", end),
        "peak_mb": peak_mb(),
        "base_mb": base,
        "checks": checks,
    }
    print(json.dumps(report))


def measure(step: str, source: Path, workdir: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--step", step, str(source), str(workdir / "store")],
        cwd=ROOT,
        env=step_environment(workdir),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise SystemExit(f"step {step} crashed (exit {completed.returncode}):\n{completed.stderr}")
    return json.loads(lines[-1])


def blocking_failures(report: dict) -> list[str]:
    return [name for name, (passed, severity) in report["checks"].items()
            if not passed and severity == "ERROR"]  # fmt: skip


def benchmark_size(rows: int, base, workdir: Path) -> dict[str, dict]:
    workdir.mkdir(parents=True)
    (workdir / "dagster_home").mkdir()
    csv = workdir / "tweets.csv"
    size = write_dataset(csv, rows, base)
    print(f"{rows:,} rows: {size / 1e6:.0f} MB of CSV", file=sys.stderr)
    reports: dict[str, dict] = {}
    for step in STEPS:
        report = reports[step] = measure(step, csv, workdir)
        print(
            f"  {step}: {report['seconds']:.1f} s, peak {report['peak_mb'] / 1024:.2f} GB"
            + ("" if report["success"] else " FAILED")
            + "".join(f"; {name}: {p}/{s}" for name, (p, s) in report["checks"].items()),
            file=sys.stderr,
        )
        if not report["success"] or blocking_failures(report):
            print(f"  stopped: {step} failed", file=sys.stderr)
            break
    return reports


def print_tables(results: dict[int, dict[str, dict]]) -> None:
    def seconds(reports: dict, step: str) -> str:
        return f"{reports[step]['seconds']:.1f} s" if step in reports else "-"

    def peak(reports: dict) -> str:
        step, report = max(reports.items(), key=lambda item: item[1]["peak_mb"])
        return f"{report['peak_mb'] / 1024:.2f} GB ({step})"

    print("| rows | raw_texts | text_splits | text_splits_checks | peak memory of a step |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for rows, reports in results.items():
        cells = [seconds(reports, s) for s in ("raw_texts", "text_splits", "text_splits_checks")]
        print(f"| {rows:,} | " + " | ".join(cells) + f" | {peak(reports)} |")

    print("\nEvery step: seconds / peak memory (GB, imports included)\n")
    print("| rows | " + " | ".join(STEPS) + " |")
    print("| ---: |" + " ---: |" * len(STEPS))
    for rows, reports in results.items():
        cells = [
            f"{reports[s]['seconds']:.1f} / {reports[s]['peak_mb'] / 1024:.2f}"
            if s in reports
            else "-"
            for s in STEPS
        ]
        print(f"| {rows:,} | " + " | ".join(cells) + " |")

    smallest = min(results)
    print(f"\nTime per row against {smallest:,} rows (1.00: linear; below: fixed costs shared)\n")
    print("| rows | " + " | ".join(STEPS) + " |")
    print("| ---: |" + " ---: |" * len(STEPS))
    for rows, reports in results.items():
        cells = []
        for step in STEPS:
            small = results[smallest].get(step)
            if step not in reports or not small or small["seconds"] <= 0:
                cells.append("-")
                continue
            ratio = (reports[step]["seconds"] / rows) / (small["seconds"] / smallest)
            cells.append(f"{ratio:.2f}")
        print(f"| {rows:,} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=list(DEFAULT_SIZES))
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep each size's CSV and store")
    parser.add_argument(
        "--tweeteval",
        type=Path,
        help="TweetEval hate folder (default: ../shared/data/tweeteval/hate, else the embedded "
        "copy)",
    )
    parser.add_argument("--step", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_step(*args.step)
        return
    folder = args.tweeteval or SHARED_TWEETEVAL
    if not (folder / "train_text.txt").is_file():
        from assets.data.sources.transports import DEFAULT_SOURCE, embedded_folder

        folder = embedded_folder(DEFAULT_SOURCE)
    base = tweeteval_train(folder)
    scratch = Path(tempfile.mkdtemp(prefix="textops-volume-", dir=args.workdir))
    results = {}
    try:
        for rows in sorted(set(args.sizes)):
            workdir = scratch / str(rows)
            results[rows] = benchmark_size(rows, base, workdir)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print_tables(results)


if __name__ == "__main__":
    main()
