"""Two training processes (torchrun, DDP over gloo) against one, on the CPU, side by side.

Both train `fine_tuned_model` through the Dagster graph on the same TweetEval hate tweets with
the same seed and global batch (1 x B against 2 x B/2), dropout on as in production, each in a
fresh process (so neither pays the other's warm-up), then evaluate on the same test tweets.
A third run, one process with another seed, measures the noise: with dropout on, one process
and two draw different dropout masks, so they differ as two seeds do. Reported: samples/s,
steps, the last train loss, validation and test macro F1, and how far apart the trainings'
weights ended against how far training moved them.

    python benchmarks/distributed.py --train-rows 2048 --batch-size 32
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweeteval" / "hate"
# name: (processes, seed); the second seed gives the noise two equivalent trainings differ by
RUNNERS = {"one process": (1, 42), "two processes": (2, 42), "one process, seed 43": (1, 43)}


def subset(folder: Path, rows: dict[str, int]) -> Path:
    """The first rows of each split, in TweetEval's own format."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.txt").write_text((DATA / "mapping.txt").read_text())
    for split, count in rows.items():
        for part in ("text", "labels"):
            lines = (DATA / f"{split}_{part}.txt").read_text().splitlines()[:count]
            (folder / f"{split}_{part}.txt").write_text("\n".join(lines) + "\n")
    return folder


def run_one(
    processes: int, seed: int, source: Path, out: Path, batch_size: int, steps: int
) -> None:
    """One training and its evaluation, in this (fresh) process."""
    import dagster as dg
    from safetensors.torch import load_file  # noqa: F401  (fails early when missing)

    from assets.data.raw import raw_texts
    from assets.data.splits import text_splits
    from assets.model.evaluate import evaluation_report
    from assets.model.train import fine_tuned_model
    from orchestration.definitions import pipeline_resources
    from orchestration.resources import LocalArtifactStore

    placement = {"accelerator": "cpu"}
    if processes > 1:
        placement |= {"launcher": "torchrun", "devices": str(processes), "strategy": "ddp"}
    store = LocalArtifactStore(root=str(out / "store"))
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_texts, text_splits, fine_tuned_model, evaluation_report],
        resources=pipeline_resources(store),
        instance=instance,
        run_config={
            "ops": {
                "raw_texts": {"config": {"source": str(source)}},
                "fine_tuned_model": {
                    "config": {
                        **placement,
                        "batch_size": batch_size // processes,
                        "seed": seed,
                        "max_steps": steps,
                        "max_length": 64,
                        "progress_every_s": 600.0,
                    }
                },
                "evaluation_report": {"config": {"latency_samples": 4}},
            }
        },
    )
    meta = result.asset_materializations_for_node("fine_tuned_model")[0].metadata
    model_dir = store.local_dir(result.output_for_node("fine_tuned_model").path)
    training = json.loads((model_dir / "training.json").read_text())
    report = store.read_json(f"{result.output_for_node('evaluation_report').path}/report.json")
    losses = [h["train/loss"] for h in training["history"] if "train/loss" in h]
    summary = {
        "dagster_runs": instance.get_runs_count(),
        "world_size": meta["world_size"].value,
        "steps": meta["global_step"].value,
        "samples_per_s": meta["train_samples_per_s"].value,
        "wall_time_s": meta["wall_time_s"].value,
        "last_train_loss": losses[-1],
        "best_val_macro_f1": meta["best_val_macro_f1"].value,
        "test_macro_f1": report["model"]["value"],
        "test_ci95": report["model"]["ci95"],
        "device": meta["device"].text,
        "weights": str(model_dir / "model.safetensors"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def cpu_flags() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return f"{fields.get('Model name', '?').strip()}, {os.cpu_count()} cores, {' '.join(wanted)}"


def weight_distance(first: str, second: str, base: Path) -> dict[str, float]:
    from safetensors.torch import load_file

    one, two = load_file(first), load_file(second)
    start = load_file(base / "model.safetensors")
    apart = moved = 0.0
    apart_sq = moved_sq = 0.0
    for name, weight in one.items():
        reference = start.get(name.removeprefix("bert."))
        if reference is None or reference.shape != weight.shape:
            continue  # the new head has no pretrained reference
        diff = weight - two[name]
        update = weight - reference
        apart, moved = max(apart, float(diff.abs().max())), max(moved, float(update.abs().max()))
        apart_sq += float((diff**2).sum())
        moved_sq += float((update**2).sum())
    return {
        "max_abs_apart": apart,
        "max_abs_moved": moved,
        "relative_apart": (apart_sq / moved_sq) ** 0.5 if moved_sq else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=2048)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--child", nargs=4, metavar=("PROCESSES", "SEED", "SOURCE", "OUT"))
    args = parser.parse_args()
    if args.child:
        processes, seed, source, out = args.child
        run_one(int(processes), int(seed), Path(source), Path(out), args.batch_size, args.steps)
        return
    if not DATA.is_dir():
        raise SystemExit(f"benchmark data not found at {DATA} (../shared is absent)")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="textops-distributed-"))
    rows = {"train": args.train_rows, "val": args.eval_rows, "test": args.eval_rows}
    source = subset(work / "data", rows)
    results = {}
    for name, (processes, seed) in RUNNERS.items():
        out = work / name.replace(" ", "-").replace(",", "")
        out.mkdir()
        command = [
            sys.executable, __file__, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--child", str(processes), str(seed), str(source), str(out),
        ]  # fmt: skip
        subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[1])
        results[name] = json.loads((out / "summary.json").read_text())

    from assets.model.training.base_model import DEFAULT_BASE_MODEL, resolve_base_model

    one, two = results["one process"], results["two processes"]
    base = resolve_base_model(DEFAULT_BASE_MODEL)
    distance = weight_distance(one["weights"], two["weights"], base)
    noise = weight_distance(one["weights"], results["one process, seed 43"]["weights"], base)
    print(f"CPU: {cpu_flags()}")
    print(f"{args.train_rows} train tweets, global batch {args.batch_size}, {args.steps} steps\n")
    keys = [
        "dagster_runs", "world_size", "steps", "samples_per_s", "wall_time_s",
        "last_train_loss", "best_val_macro_f1", "test_macro_f1", "test_ci95", "device",
    ]  # fmt: skip
    print(f"| | {' | '.join(results)} |\n|---|---|---|---|")
    for key in keys:
        print(f"| {key} | " + " | ".join(str(r[key]) for r in results.values()) + " |")
    print(f"\ntwo / one samples/s: {two['samples_per_s'] / one['samples_per_s']:.2f}x")
    print(
        "weights: max |one - two| {max_abs_apart:.2e}; training moved them by up to "
        "{max_abs_moved:.2e}; ||one - two|| / ||update|| = {relative_apart:.3f}".format(**distance)
    )
    print(
        "noise, one process seed 42 against seed 43: max {max_abs_apart:.2e}; "
        "||a - b|| / ||update|| = {relative_apart:.3f}".format(**noise)
    )


if __name__ == "__main__":
    main()
