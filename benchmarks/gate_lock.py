"""How long `approved_model` holds the model store's lock, and how long the gate step takes, on
three approvals: the first model (no champion), a second model on the same test split (the
champion's recorded predictions), and a model on another test split (the champion rescored).
The lock's holder is timed around the registry's `exclusive()`, so the same script measures any
version of textops that has it: run it with PYTHONPATH at a checkout of an earlier commit to
compare.

    python benchmarks/gate_lock.py --rows 300
    git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before python benchmarks/gate_lock.py
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="rows per source split")
    parser.add_argument("--steps", type=int, default=40, help="training steps per model")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="textops-gate-lock-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # a gigabyte of models
    # before bentoml is imported anywhere: a model store of this run's own
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    os.environ["TEXTOPS_LANDING"] = str(scratch / "landing")

    import dagster as dg

    from orchestration import definitions
    from orchestration.resources import BentoModelStore, LocalArtifactStore

    held: list[float] = []
    exclusive = BentoModelStore.exclusive

    @contextmanager
    def timed(self):
        with exclusive(self) as waited:
            started = time.perf_counter()
            try:
                yield waited
            finally:
                held.append(time.perf_counter() - started)

    BentoModelStore.exclusive = timed
    store = LocalArtifactStore(root=str(scratch / "store"))
    instance = dg.DagsterInstance.ephemeral()
    graph = [a.key.to_user_string() for a in definitions.TRAINING_GRAPH][:-1]  # not bento
    scenarios = [
        ("first model (no champion)", 0, 42),
        ("same test split (recorded predictions)", 0, 7),
        ("another test split (champion rescored)", 1, 42),
    ]
    print("| approval | decision | export + parity step s | gate step s | lock held s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, sample_seed, seed in scenarios:
        run_config = {
            "ops": {
                "raw_texts": {
                    "config": {"max_rows_per_split": args.rows, "sample_seed": sample_seed}
                },
                "fine_tuned_model": {
                    "config": {"max_steps": args.steps, "max_length": 64, "seed": seed}
                },
                # every challenger approved, so that every scenario publishes a model
                "approved_model": {"config": {"force": True, "force_reason": "benchmark"}},
            }
        }
        before = len(held)
        result = dg.materialize(
            [*definitions.ASSETS, *definitions.ASSET_CHECKS],
            selection=graph,
            resources=definitions.pipeline_resources(store),
            run_config=run_config,
            instance=instance,
        )
        steps = {
            s.step_key: s.end_time - s.start_time
            for s in instance.get_run_step_stats(result.run_id)
        }
        summary = result.asset_materializations_for_node("approved_model")[0].metadata["summary"]
        export = f"{steps['serving_variants']:.1f}" if "serving_variants" in steps else "(in gate)"
        print(
            f"| {name} | {summary.value.split(':')[0]} | {export} | "
            f"{steps['approved_model']:.1f} | {sum(held[before:]):.3f} |"
        )


if __name__ == "__main__":
    main()
