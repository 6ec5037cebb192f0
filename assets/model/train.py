"""`fine_tuned_model`: the pretrained encoder fine-tuned on `text_splits` with Lightning."""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from assets.interfaces.launcher import TrainingLauncher
from assets.interfaces.manifests import MANIFEST_IO, ModelManifest, TextSplitsManifest, as_output
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import ExperimentTracker, location_metadata
from assets.metadata import numeric_metadata
from assets.model.calibration import calibration_summary, fit_temperature
from assets.model.plots import training_curves
from assets.model.predict import load_classifier, predict
from assets.model.training.config import FineTuneConfig
from assets.plots import markdown_image
from assets.progress import Log
from assets.tracking import model_files, splits_files, tracking_context
from assets.versioning import combined_hash, source_version
from textops_core.inference import CALIBRATION_FILE

if TYPE_CHECKING:
    from assets.model.training.fit import TrainingOutcome
    from assets.model.training.placement import Placement

# Trainings share the machine's CPU or GPU: the pool lets one run at a time per deployment
# (the instance's `concurrency: pools: default_limit`, see docs/pipeline.md).
TRAINING_POOL = "textops-training"


def calibrate(model_dir: Path, validation: Path, max_length: int, log: Log) -> dict:
    """Temperature scaling on the validation split (never test): the fitted temperature and
    NLL / ECE before and after."""
    import polars as pl

    frame = pl.read_parquet(validation)
    predictor = load_classifier(model_dir, max_length, temperature=1.0)
    logits = predict(predictor, frame["text"].to_list(), log, "calibration").logits
    labels = frame["label"].to_numpy()
    summary = calibration_summary(logits, labels, fit_temperature(logits, labels))
    log(
        f"temperature {summary['temperature']:.3f} (validation ECE {summary['ece_before']:.4f} "
        f"-> {summary['ece_after']:.4f})"
    )
    return summary | {"fitted_on": "validation", "rows": frame.height}


def train(
    context: dg.AssetExecutionContext,
    config: FineTuneConfig,
    place: "Placement",
    launcher: TrainingLauncher,
    split_paths: dict[str, Path],
    label_names: list[str],
    checkpoint_dir: Path,
    export: Path,
    logger,
) -> "TrainingOutcome":
    """Fine-tune in the step's own process, or in torchrun's processes through the launcher:
    then rank 0's log reaches the run as it goes, its outcome comes back as a Pipes message,
    and its curves go to the tracker from here (one writer)."""
    from assets.model.training.fit import TrainingOutcome, fine_tune
    from assets.model.training.placement import torchrun_args
    from assets.model.training.worker import OUTCOME

    if place.launcher == "in_process":
        return fine_tune(
            config,
            split_paths,
            label_names,
            checkpoint_dir,
            export,
            context.log.info,
            logger=logger,
            place=place,
        )
    extras = {
        "config": config.model_dump(),
        "split_paths": {name: str(path) for name, path in split_paths.items()},
        "label_names": label_names,
        "checkpoint_dir": str(checkpoint_dir),
        "export_dir": str(export),
    }
    messages = launcher.launch(context, torchrun_args(place), place.num_nodes, extras)
    reported = [m[OUTCOME] for m in messages if isinstance(m, dict) and OUTCOME in m]
    if len(reported) != 1 or not (export / "model.safetensors").is_file():
        raise RuntimeError(
            f"torchrun's rank 0 ended without reporting a trained model in {export} "
            f"({len(reported)} outcome messages)"
        )
    outcome = TrainingOutcome(**{**reported[0], "model_dir": export})
    if logger:
        for entry in outcome.history:
            step = int(entry["step"])
            logger.log_metrics({k: v for k, v in entry.items() if k != "step"}, step=step)
    return outcome


@dataclass(frozen=True)
class TrainingIdentity:
    """What names one training: its model version, the hash of its settings, the code version,
    the run, where its model goes and where its checkpoints wait."""

    version: str
    fingerprint: str
    code_version: str
    run_id: str
    model_dir: str
    checkpoint_key: str

    @classmethod
    def of(
        cls, context: dg.AssetExecutionContext, config: FineTuneConfig, splits: TextSplitsManifest
    ) -> "TrainingIdentity":
        fingerprint = config.fingerprint()
        # Every training is its own version: two trainings are two models, even on one dataset.
        version = combined_hash(
            {"text_splits": splits.version, "config": fingerprint, "run": context.run_id}
        )[:16]
        return cls(
            version=version,
            fingerprint=fingerprint,
            code_version=context.assets_def.code_versions_by_key[context.asset_key],
            run_id=context.run_id,
            model_dir=f"fine_tuned_model/{version}",
            # under the data version and config hash: a rerun of the same data and config
            # after a crash resumes, anything else starts fresh
            checkpoint_key=f"checkpoints/fine_tuned_model/{splits.version}-{fingerprint}",
        )


def finish_model(
    export: Path,
    outcome: "TrainingOutcome",
    config: FineTuneConfig,
    splits: TextSplitsManifest,
    split_paths: dict[str, Path],
    identity: TrainingIdentity,
    log: Log,
) -> dict[str, Any]:
    """The trained model's folder completed: its curves, its temperature fitted on validation,
    and training.json (settings, data version, code version, outcome). Returns training.json."""
    (export / "training_curves.png").write_bytes(training_curves(outcome.history))
    calibration = calibrate(export, split_paths["validation"], config.max_length, log)
    (export / CALIBRATION_FILE).write_text(json.dumps(calibration, indent=2))
    training = {
        "config": config.model_dump(),
        "config_fingerprint": identity.fingerprint,
        "calibration": calibration,
        "code_version": identity.code_version,
        "data_version": {"text_splits": splits.version, **splits.hashes},
        "label_names": splits.label_names,
        "dagster_run_id": identity.run_id,
        **outcome.summary(),
        "model_dir": identity.model_dir,
        "history": outcome.history,
    }
    (export / "training.json").write_text(json.dumps(training, indent=2))
    return training


def model_card(training: dict[str, Any], identity: TrainingIdentity) -> dict[str, Any]:
    """What the tracker records with the model."""
    config = training["config"]
    return {
        "model_version": identity.version,
        "text_splits_version": training["data_version"]["text_splits"],
        "base_model": config["base_model"],
        "label_names": training["label_names"],
        "max_length": config["max_length"],
        "best_val_macro_f1": training["best_val_macro_f1"],
        "temperature": training["calibration"]["temperature"],
        "code_version": identity.code_version,
        "dagster_run_id": identity.run_id,
    }


def model_metadata(outcome: "TrainingOutcome", training: dict[str, Any], curves: bytes) -> dict:
    """What the UI shows of the training: chartable numbers, where it ran, its curves."""
    calibration = training["calibration"]
    return {
        **numeric_metadata(
            {
                "best_val_macro_f1": outcome.best_val_macro_f1,
                "best_epoch": outcome.best_epoch,
                "best_step": outcome.best_step,
                "global_step": outcome.global_step,
                "resumed_from_step": outcome.resumed_from_step or 0,
                "wall_time_s": outcome.wall_time_s,
                "train_samples_per_s": outcome.train_samples_per_s,
                "world_size": outcome.world_size,
                "num_nodes": outcome.num_nodes,
                "temperature": calibration["temperature"],
                "val_ece_before": calibration["ece_before"],
                "val_ece_after": calibration["ece_after"],
            }
        ),
        "device": outcome.device,
        "launcher": outcome.launcher,
        "precision": outcome.precision,
        "text_splits_version": dg.MetadataValue.text(training["data_version"]["text_splits"]),
        "code_version": dg.MetadataValue.text(training["code_version"]),
        "config": dg.MetadataValue.json(training["config"]),
        "curves": dg.MetadataValue.md(markdown_image(curves, "training curves")),
    }


@dg.asset(
    group_name="model",
    kinds={"pytorch", "lightning", "wandb"},
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    pool=TRAINING_POOL,
    description="A pretrained encoder fine-tuned on the train split; best checkpoint by "
    "validation macro F1, saved as safetensors with its tokenizer and label mapping.",
)
def fine_tuned_model(
    context: dg.AssetExecutionContext,
    config: FineTuneConfig,
    store: ArtifactStore,
    tracker: ExperimentTracker,
    launcher: TrainingLauncher,
    text_splits: TextSplitsManifest,
) -> dg.Output[ModelManifest]:
    from assets.model.training.fit import training_placement

    # a placement that cannot work is refused before anything loads or starts
    place = training_placement(config, launcher.max_nodes())
    identity = TrainingIdentity.of(context, config, text_splits)
    split_paths = {
        name: store.local_dir(str(Path(path).parent)) / Path(path).name
        for name, path in text_splits.paths.items()
    }
    checkpoints = store.working_dir(identity.checkpoint_key)
    tracking = tracking_context(context, text_splits.version, identity.version)
    with (
        tracker.training(tracking, config.model_dump(), splits_files(store, text_splits)) as run,
        # beside the checkpoints, not in the system's temp folder: torchrun's ranks on other
        # machines write the export there (a volume they share), and it goes with them
        tempfile.TemporaryDirectory(prefix="export-", dir=checkpoints) as scratch,
    ):
        export = Path(scratch) / "model"
        outcome = train(
            context, config, place, launcher, split_paths, text_splits.label_names,
            checkpoints, export, run.logger,
        )  # fmt: skip
        training = finish_model(
            export, outcome, config, text_splits, split_paths, identity, context.log.info
        )
        curves = (export / "training_curves.png").read_bytes()
        store.upload_dir(identity.model_dir, export)
        run.log_model(model_files(store, identity.model_dir, model_card(training, identity)))
    store.delete(identity.checkpoint_key)
    manifest = ModelManifest(
        version=identity.version,
        path=identity.model_dir,
        label_names=text_splits.label_names,
        max_length=config.max_length,
        base_model=config.base_model,
        code_version=identity.code_version,
        best_val_macro_f1=outcome.best_val_macro_f1,
        temperature=training["calibration"]["temperature"],
        text_splits=text_splits,
    )
    return as_output(
        manifest,
        model_metadata(outcome, training, curves)
        | {"path": dg.MetadataValue.path(store.uri(identity.model_dir))}
        | location_metadata(run.location),
    )
