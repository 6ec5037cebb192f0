"""A small W&B sweep over learning rate and batch size of `fine_tuned_model`.

Each trial materializes `fine_tuned_model` and `evaluation_report` on the current
`text_splits` in the store, with the trial's hyperparameters; W&B picks them and plots
`val/macro_f1` across trials. The training logs into the trial's own run (the one the agent
watches, where the sweep's metric must land); the evaluation is a run of its own in the same
group. Sweeps need the W&B server: set WANDB_API_KEY, then

    python -m orchestration.sweep --count 6

Offline (no key) the command stops with that message instead of running.
"""

import argparse
import os
from typing import Any

SWEEP = {
    "method": "grid",
    "metric": {"name": "val/macro_f1", "goal": "maximize"},
    "parameters": {
        "learning_rate": {"values": [3e-5, 5e-5, 1e-4]},
        "batch_size": {"values": [16, 32]},
    },
}


def trial_run_config(parameters: dict[str, Any], base: dict[str, Any] | None = None) -> dict:
    """Run config of one trial: the sweep's parameters over the base training config."""
    allowed = set(SWEEP["parameters"])
    unknown = set(parameters) - allowed
    if unknown:
        raise ValueError(f"sweep parameters {sorted(unknown)} are not in {sorted(allowed)}")
    return {"ops": {"fine_tuned_model": {"config": {**(base or {}), **parameters}}}}


def run_trial(parameters: dict[str, Any] | None = None, project: str = "textops") -> str:
    """One trial: a W&B run (the agent's, with the sweep's parameters in its config; or one made
    here with `parameters`), and a Dagster run of the training and its evaluation under it.
    Returns the Dagster run id."""
    import dagster as dg
    import wandb

    from orchestration.definitions import defs
    from orchestration.resources import WandbTracker

    run = wandb.init(
        project=project,
        job_type="sweep-trial",
        config=parameters,
        dir=WandbTracker().files_dir(),
    )
    try:
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(
            run_config=trial_run_config(dict(run.config)),
            asset_selection=[dg.AssetKey("fine_tuned_model"), dg.AssetKey("evaluation_report")],
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
        )
        run.summary["dagster_run_id"] = result.run_id
        run.summary["dagster_success"] = result.success
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0 if result.success else 1)
    return result.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description="W&B sweep of fine_tuned_model")
    parser.add_argument("--count", type=int, default=6, help="trials to run")
    parser.add_argument("--project", default="textops")
    args = parser.parse_args()
    if not os.environ.get("WANDB_API_KEY"):
        raise SystemExit("W&B sweeps need the W&B server: set WANDB_API_KEY (see docs/pipeline.md)")
    import wandb

    sweep_id = wandb.sweep(SWEEP, project=args.project)
    wandb.agent(
        sweep_id,
        function=lambda: run_trial(project=args.project),
        count=args.count,
        project=args.project,
    )


if __name__ == "__main__":
    main()
