"""Weights & Biases as the experiment tracker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from assets.interfaces.store import default_home
from assets.interfaces.tracker import ExperimentTracker


class WandbTracker(ExperimentTracker):
    """Weights & Biases: offline files by default (sync later with `wandb sync <dir>`), online
    when WANDB_API_KEY is set; WANDB_MODE (e.g. `disabled`) overrides both."""

    project: str = Field("textops", description="W&B project")
    entity: str = Field("", description="W&B entity (team or user); empty: the key's default")
    mode: str = Field("", description="online, offline or disabled; empty: from the environment")
    dir: str = Field("", description="Folder for W&B files; empty: <TEXTOPS_HOME>/wandb")

    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        if env_mode := os.environ.get("WANDB_MODE"):
            return env_mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"

    def _dir(self) -> str:
        folder = Path(self.dir or Path(default_home()) / "wandb").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def lightning_logger(self, name: str, config: dict[str, Any]) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(
            project=self.project,
            entity=self.entity or None,
            name=name,
            save_dir=self._dir(),
            mode=self.resolved_mode(),
            job_type="train",
        )
        logger.log_hyperparams(config)
        return logger

    def finish(self) -> None:
        import wandb

        if wandb.run is not None:
            wandb.finish()

    def log_report(self, name: str, metrics: dict[str, float], images: dict[str, Path]) -> None:
        import wandb

        run = wandb.init(
            project=self.project,
            entity=self.entity or None,
            name=name,
            dir=self._dir(),
            mode=self.resolved_mode(),
            job_type="evaluation",
            reinit="finish_previous",
        )
        run.summary.update(metrics)
        run.log({key: wandb.Image(str(path)) for key, path in images.items()})
        run.finish()
