"""Weights & Biases as the experiment tracker.

Every W&B run of one Dagster run shares a group (the Dagster run id) and carries the versions it
worked on in its config. The splits are a `dataset` artifact and each trained model a `model`
artifact, both by reference to the files in the artifact store (W&B keeps their checksums, not
copies). The training run uses the splits and produces the model; the evaluation run uses the
model; the gate's run uses it too, and moves the `champion` alias onto the model served.

Offline (no WANDB_API_KEY) everything is written to files for `wandb sync`, except the "used"
edges: the W&B SDK refuses `use_artifact` offline, so an offline run records what it used in its
config (`inputs`) instead, and W&B's lineage graph shows those edges only for runs made online.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from assets.interfaces.store import default_home
from assets.interfaces.tracker import (
    DecisionRecord,
    Evaluation,
    ExperimentTracker,
    Files,
    TrackingContext,
    TrainingRun,
)

logger = logging.getLogger("textops.tracking")

DATASET = "textops-splits"
MODEL = "textops-model"
CHAMPION = "champion"


def side_path(method: Callable) -> Callable:
    """Tracking never fails a step: an error is logged as a warning and the step goes on
    (returning no location)."""

    @functools.wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as error:  # whatever W&B raised, the step's own work stands
            logger.warning("W&B tracking failed in %s: %s", method.__name__, error)
            return ""

    return guarded


def dataset_alias(version: str) -> str:
    return f"splits-{version}"


def model_alias(version: str) -> str:
    return f"model-{version}"


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

    @property
    def enabled(self) -> bool:
        return self.resolved_mode() != "disabled"

    def files_dir(self) -> str:
        """Where W&B writes its files (offline runs: `wandb sync <this>/wandb/offline-run-*`)."""
        folder = Path(self.dir or Path(default_home()) / "wandb").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    def _init(self, context: TrackingContext, job_type: str, name: str, config: dict | None = None):
        import wandb

        return wandb.init(
            project=self.project,
            entity=self.entity or None,
            dir=self.files_dir(),
            mode=self.resolved_mode(),
            group=context.dagster_run_id,
            job_type=job_type,
            name=name,
            config={**context.config(), **(config or {})},
            reinit="create_new",
        )

    # --- artifacts ------------------------------------------------------------------------

    @staticmethod
    def _artifact(name: str, kind: str, files: Files, description: str | None = None):
        import wandb

        artifact = wandb.Artifact(name, type=kind, metadata=files.metadata, description=description)
        for entry, uri in sorted(files.uris.items()):
            artifact.add_reference(uri, name=entry)
        return artifact

    @staticmethod
    def _use(run, name: str, alias: str, fallback) -> None:
        """`run` used the artifact `name:alias` (`fallback` builds it when W&B has none yet);
        offline, the SDK refuses the edge, so the run records it in its config instead."""
        if run.offline:
            inputs = [*run.config.get("inputs", []), f"{name}:{alias}"]
            run.config.update({"inputs": inputs}, allow_val_change=True)
            return
        import wandb

        try:
            run.use_artifact(f"{name}:{alias}")
        except (wandb.errors.CommError, ValueError):
            run.use_artifact(fallback())

    @staticmethod
    def location(run) -> str:
        """A run's URL online, its folder (what `wandb sync` takes) offline."""
        if run.offline:
            return str(Path(run.dir).parent)
        return run.url or ""

    # --- the steps ------------------------------------------------------------------------

    @side_path
    def log_dataset(self, context: TrackingContext, splits: Files) -> str:
        if not self.enabled:
            return ""
        run = self._init(context, "dataset", f"text_splits-{context.data_version}")
        try:
            run.log_artifact(
                self._artifact(DATASET, "dataset", splits),
                aliases=[dataset_alias(context.data_version or "")],
            )
            return self.location(run)
        finally:
            run.finish()

    @contextmanager
    def training(
        self, context: TrackingContext, config: dict[str, Any], splits: Files
    ) -> Iterator[TrainingRun]:
        started = self._start_training(context, config, splits) if self.enabled else None
        if started is None:
            yield _NoTraining()
            return
        run, adopted = started
        try:
            yield _WandbTraining(run, context)
        finally:
            if not adopted:
                side_path(run.finish)()

    def _start_training(self, context: TrackingContext, config: dict[str, Any], splits: Files):
        """(run, whether it was adopted), or None when W&B failed: the training goes on."""
        import wandb

        try:
            # A run already active in this process is a sweep's trial: the training logs into
            # it, so its metrics land on the run the sweep agent watches, and the trial ends it.
            adopted = wandb.run
            run = adopted or self._init(
                context, "train", f"fine_tuned_model-{context.model_version}"
            )
            extra = {**context.config(), **config} if adopted is not None else config
            run.config.update(extra, allow_val_change=True)
            self._use(
                run,
                DATASET,
                dataset_alias(context.data_version or ""),
                lambda: self._artifact(DATASET, "dataset", splits),
            )
            return run, adopted is not None
        except Exception as error:  # tracking never fails a training
            logger.warning("W&B tracking failed to start the training run: %s", error)
            return None

    @side_path
    def log_evaluation(self, context: TrackingContext, model: Files, evaluation: Evaluation) -> str:
        if not self.enabled:
            return ""
        import wandb

        run = self._init(context, "evaluation", f"evaluation_report-{context.model_version}")
        try:
            self._use(
                run,
                MODEL,
                model_alias(context.model_version or ""),
                lambda: self._artifact(MODEL, "model", model),
            )
            run.summary.update(evaluation.metrics)
            run.log(
                {
                    "confusion_matrix": wandb.plot.confusion_matrix(
                        y_true=evaluation.y_true,
                        preds=evaluation.y_pred,
                        class_names=evaluation.label_names,
                    ),
                    "per_class": _table(evaluation.per_class),
                    "predictions": _table(evaluation.predictions),
                    "calibration": _table(evaluation.calibration),
                    **{
                        name: wandb.Image(_png(png, run.dir, name))
                        for name, png in evaluation.images.items()
                    },
                }
            )
            return self.location(run)
        finally:
            run.finish()

    @side_path
    def log_decision(self, context: TrackingContext, decision: DecisionRecord) -> str:
        if not self.enabled:
            return ""
        run = self._init(
            context,
            "gate",
            f"approved_model-{context.model_version or 'rollback'}",
            {"approved": decision.approved},
        )
        try:
            if decision.model is not None:
                self._use(
                    run,
                    MODEL,
                    model_alias(context.model_version or ""),
                    lambda: self._artifact(MODEL, "model", decision.model),
                )
            run.summary.update(
                {
                    "approved": decision.approved,
                    "decision": decision.summary,
                    "reasons": decision.record.get("reasons", []),
                    "served_tag": decision.record.get("served_tag"),
                }
            )
            if decision.champion is not None:
                # the alias moves: the model that held it before no longer does
                version = decision.champion.metadata["model_version"]
                run.log_artifact(
                    self._artifact(MODEL, "model", decision.champion, decision.summary),
                    aliases=[CHAMPION, model_alias(version)],
                )
            elif decision.model is not None and not decision.approved:
                # a rejected model keeps no alias; its version says why
                run.log_artifact(
                    self._artifact(MODEL, "model", decision.model, decision.summary),
                    aliases=[model_alias(context.model_version or "")],
                )
            if decision.withdrawn is not None:
                version = decision.withdrawn.metadata["model_version"]
                run.log_artifact(
                    self._artifact(MODEL, "model", decision.withdrawn, decision.summary),
                    aliases=[model_alias(version)],
                )
            return self.location(run)
        finally:
            run.finish()


class _NoTraining(TrainingRun):
    location = ""

    @property
    def logger(self) -> Any:
        return False

    def log_model(self, model: Files) -> None:
        return None


class _WandbTraining(TrainingRun):
    def __init__(self, run, context: TrackingContext) -> None:
        self.run = run
        self.context = context
        self.location = WandbTracker.location(run)

    @property
    def logger(self) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(experiment=self.run, log_model=False)

    @side_path
    def log_model(self, model: Files) -> None:
        self.run.log_artifact(
            WandbTracker._artifact(MODEL, "model", model),
            aliases=[model_alias(self.context.model_version or "")],
        )


def _table(rows: list[dict[str, Any]]):
    import wandb

    columns = list(rows[0]) if rows else []
    return wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])


def _png(data: bytes, folder: str, name: str) -> str:
    path = Path(folder) / f"{name}.png"
    path.write_bytes(data)
    return str(path)
