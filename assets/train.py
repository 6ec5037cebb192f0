"""`fine_tuned_model`: the pretrained encoder fine-tuned on `text_splits` with Lightning."""

import json
import tempfile
from pathlib import Path

import dagster as dg

from assets.numbers import numeric_metadata
from assets.plots import markdown_image, training_curves
from assets.splits import text_splits
from assets.training.config import FineTuneConfig
from assets.training.fit import fine_tune
from assets.versioning import combined_hash
from orchestration.resources import ArtifactStore, ExperimentTracker


@dg.asset(
    deps=[text_splits],
    group_name="model",
    kinds={"pytorch", "lightning", "wandb"},
    description="A pretrained encoder fine-tuned on the train split; best checkpoint by "
    "validation macro F1, saved as safetensors with its tokenizer and label mapping.",
)
def fine_tuned_model(
    context: dg.AssetExecutionContext,
    config: FineTuneConfig,
    store: ArtifactStore,
    tracker: ExperimentTracker,
) -> dg.MaterializeResult:
    splits = store.latest("text_splits")
    label_names = splits["label_names"]
    fingerprint = config.fingerprint()
    version = combined_hash({"text_splits": splits["version"], "config": fingerprint})[:16]
    # Checkpoints live under the data version and config hash: a rerun of the same data and
    # config after a crash resumes, anything else starts fresh.
    checkpoint_key = f"checkpoints/fine_tuned_model/{splits['version']}-{fingerprint}"
    split_paths = {
        name: store.local_dir(str(Path(path).parent)) / Path(path).name
        for name, path in splits["paths"].items()
    }
    run_name = f"fine_tuned_model-{version}-{context.run_id[:8]}"
    logger = tracker.lightning_logger(
        run_name, {**config.model_dump(), "data_version": splits["version"]}
    )
    with tempfile.TemporaryDirectory(prefix="textops-model-") as scratch:
        export = Path(scratch) / "model"
        try:
            outcome = fine_tune(
                config,
                split_paths,
                label_names,
                store.working_dir(checkpoint_key),
                export,
                context.log.info,
                logger=logger,
            )
        finally:
            tracker.finish()
        curves = training_curves(outcome.history)
        (export / "training_curves.png").write_bytes(curves)
        training = {
            "config": config.model_dump(),
            "config_fingerprint": fingerprint,
            "data_version": {"text_splits": splits["version"], **splits["hashes"]},
            "label_names": label_names,
            "dagster_run_id": context.run_id,
            **outcome.summary(),
            "model_dir": f"fine_tuned_model/{version}",
            "history": outcome.history,
        }
        (export / "training.json").write_text(json.dumps(training, indent=2))
        # The model becomes visible only complete: folder first, then the manifest.
        store.upload_dir(f"fine_tuned_model/{version}", export)
    store.publish(
        "fine_tuned_model",
        {
            "version": version,
            "path": f"fine_tuned_model/{version}",
            "label_names": label_names,
            "max_length": config.max_length,
            "text_splits_version": splits["version"],
            "best_val_macro_f1": outcome.best_val_macro_f1,
        },
    )
    store.delete(checkpoint_key)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **numeric_metadata(
                {
                    "best_val_macro_f1": outcome.best_val_macro_f1,
                    "best_epoch": outcome.best_epoch,
                    "best_step": outcome.best_step,
                    "global_step": outcome.global_step,
                    "resumed_from_step": outcome.resumed_from_step or 0,
                    "wall_time_s": outcome.wall_time_s,
                    "train_samples_per_s": outcome.train_samples_per_s,
                }
            ),
            "device": outcome.device,
            "precision": outcome.precision,
            "text_splits_version": dg.MetadataValue.text(splits["version"]),
            "config": dg.MetadataValue.json(config.model_dump()),
            "curves": dg.MetadataValue.md(markdown_image(curves, "training curves")),
            "path": dg.MetadataValue.path(store.uri(f"fine_tuned_model/{version}")),
        },
    )
