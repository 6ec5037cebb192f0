"""One rank of a torchrun training, started by `fine_tuned_model` through Dagster Pipes.

    python -m torch.distributed.run --nproc-per-node=2 --standalone -m assets.model.training.worker

Every rank reads the same Pipes context (the config, the split files, the checkpoint and export
folders, in its `extras`) and trains its share. Rank 0 alone opens the Pipes message channel:
its log lines reach the Dagster run as they happen, and at the end it reports the outcome as a
custom message; it alone writes checkpoints and the exported model. Nothing here starts a
Dagster run or touches the Dagster instance.
"""

import json
import os
from pathlib import Path
from typing import Any

from dagster_pipes import (
    PipesDefaultContextLoader,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)

from assets.interfaces.launcher import TrainingProcessError

OUTCOME = "training_outcome"


def train(extras: dict[str, Any], log) -> dict[str, Any] | None:
    from assets.model.training.config import FineTuneConfig
    from assets.model.training.fit import fine_tune, training_placement

    config = FineTuneConfig(**extras["config"])
    place = training_placement(config, max_nodes=None)
    outcome = fine_tune(
        config,
        {name: Path(path) for name, path in extras["split_paths"].items()},
        extras["label_names"],
        Path(extras["checkpoint_dir"]),
        Path(extras["export_dir"]),
        log,
        place=place,
    )
    if outcome is None:
        return None
    return {**outcome.summary(), "history": outcome.history}


def main() -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        with open_dagster_pipes() as pipes:
            pipes.log.info(
                f"rank 0 of {os.environ.get('WORLD_SIZE', '1')} on {os.uname().nodename}"
            )
            try:
                outcome = train(pipes.extras, pipes.log.info)
            except Exception as error:
                pipes.report_custom_message(
                    {TrainingProcessError.ERROR: f"{type(error).__name__}: {error}"}
                )
                raise
            # JSON round trip: the message must hold plain values only
            pipes.report_custom_message({OUTCOME: json.loads(json.dumps(outcome))})
        return
    loader = PipesEnvVarParamsLoader()
    with PipesDefaultContextLoader().load_context(loader.load_context_params()) as context:
        extras = dict(context["extras"])
    train(extras, lambda message: None)


if __name__ == "__main__":
    main()
