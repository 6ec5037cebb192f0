"""Model quality of the default recipe on every task, one training each, as the pipeline trains:
the splits `text_splits` makes, `fine_tune` with FineTuneConfig's defaults (or --set overrides),
temperature scaling fitted on validation, then validation and test scores.

For every TweetEval task under ../shared/data/tweeteval (and any folder or file given):
validation and test metric (test with its bootstrap 95 % interval), the TF-IDF baseline on the
same test split, expected calibration error before and after scaling, wall time and training
samples/s. Recipes are chosen on validation only; test is reported, never looked at to choose.

    python benchmarks/quality.py                       # every shipped task
    python benchmarks/quality.py --tasks emotion --set learning_rate=1e-4 pooling=mean
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
TWEETEVAL = ROOT.parent / "shared" / "data" / "tweeteval"


def parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def run_task(source: str, overrides: dict, log) -> dict:
    import numpy as np

    from assets.data.sources.transports import read_source
    from assets.data.splits import TextSplitsConfig, build_splits
    from assets.model import metrics
    from assets.model.baseline import tfidf_logistic_regression
    from assets.model.calibration import calibration_summary, fit_temperature
    from assets.model.predict import load_classifier, predict
    from assets.model.training.config import FineTuneConfig
    from assets.model.training.fit import fine_tune

    raw = read_source(source, Path(tempfile.gettempdir()) / "textops-quality-cache", log)
    splits = build_splits(raw.frame, TextSplitsConfig()).splits
    config = FineTuneConfig(**{"progress_every_s": 60.0, **overrides})
    with tempfile.TemporaryDirectory(prefix="textops-quality-") as scratch:
        folder = Path(scratch)
        paths = {}
        for name, frame in splits.items():
            paths[name] = folder / f"{name}.parquet"
            frame.write_parquet(paths[name])
        started = time.monotonic()
        outcome = fine_tune(
            config, paths, raw.label_names, folder / "checkpoints", folder / "model", log
        )
        wall = time.monotonic() - started
        predictor = load_classifier(folder / "model", config.max_length, temperature=1.0)
        logits = {
            name: predict(predictor, splits[name]["text"].to_list()).logits
            for name in ("validation", "test")
        }
    truth = {name: splits[name]["label"].to_numpy() for name in ("validation", "test")}
    temperature = fit_temperature(logits["validation"], truth["validation"])
    k = len(raw.label_names)
    metric = "macro_f1"
    test_pred = logits["test"].argmax(axis=1)
    low, high = metrics.bootstrap_interval(metric, truth["test"], test_pred, k, 1000, 0)
    baseline = tfidf_logistic_regression(
        splits["train"]["text"].to_list(),
        splits["train"]["label"].to_list(),
        splits["test"]["text"].to_list(),
    )
    calibration = calibration_summary(logits["test"], truth["test"], temperature)
    return {
        "source": source,
        "config": overrides,
        "rows": {name: frame.height for name, frame in splits.items()},
        "validation": metrics.score(metric, truth["validation"], logits["validation"].argmax(1), k),
        "test": metrics.score(metric, truth["test"], test_pred, k),
        "test_ci95": [low, high],
        "tfidf_test": metrics.score(metric, truth["test"], np.asarray(baseline), k),
        "temperature": temperature,
        "test_ece_before": calibration["ece_before"],
        "test_ece_after": calibration["ece_after"],
        "best_epoch": outcome.best_epoch,
        "wall_time_s": wall,
        "train_samples_per_s": outcome.train_samples_per_s,
    }


def table(results: dict[str, dict]) -> str:
    lines = [
        "| task | validation macro F1 | test macro F1 [95 % CI] | TF-IDF test | ECE test "
        "(before → after scaling) | T | best epoch | wall time | samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for task, r in results.items():
        lines.append(
            f"| {task} | {100 * r['validation']:.2f} | {100 * r['test']:.2f} "
            f"[{100 * r['test_ci95'][0]:.1f}–{100 * r['test_ci95'][1]:.1f}] | "
            f"{100 * r['tfidf_test']:.2f} | {r['test_ece_before']:.3f} → "
            f"{r['test_ece_after']:.3f} | {r['temperature']:.2f} | {r['best_epoch']} | "
            f"{r['wall_time_s'] / 60:.1f} min | {r['train_samples_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", help="more task folders or files")
    parser.add_argument("--tasks", nargs="*", help="TweetEval tasks (default: every one shipped)")
    parser.add_argument("--set", nargs="*", default=[], help="FineTuneConfig overrides k=v")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tasks = (
        args.tasks
        if args.tasks is not None
        else sorted(p.name for p in TWEETEVAL.iterdir() if (p / "mapping.txt").is_file())
        if TWEETEVAL.is_dir()
        else []
    )
    if not tasks and not args.sources:
        raise SystemExit(f"no tasks: {TWEETEVAL} is absent (../shared) and no folder was given")
    overrides = parse_overrides(args.set)
    results = {}
    for name, source in [(t, str(TWEETEVAL / t)) for t in tasks] + [
        (Path(s).name, s) for s in args.sources
    ]:
        print(f"== {name}: {source} {overrides or ''}", flush=True)
        results[name] = run_task(source, overrides, lambda m: print(f"   {m}", flush=True))
        print(json.dumps(results[name]), flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
