"""The champion as the gate sees it: the model the registry serves, checked against what Dagster
recorded, with its test predictions in the challenger's label ids."""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl

from assets.interfaces.errors import LineageError, MissingArtifactError
from assets.interfaces.manifests import TextSplitsManifest
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from assets.interfaces.store import ArtifactStore
from assets.model.evaluate import EvaluationConfig, score_predictions
from assets.model.predict import load_classifier, predict
from assets.progress import Log
from assets.serving.gate import Scores

TEST_PREDICTIONS = "test_predictions.parquet"  # in a registered model: its test labels
APPROVED_MODEL = dg.AssetKey("approved_model")
SERVED_MODEL = dg.AssetKey("served_model")  # newer than approved_model after a rollback


class LabelSetMismatchError(LineageError):
    """Champion and challenger classify into different sets of classes."""


class CorruptChampionError(LineageError):
    """The champion's files do not match their checksums: there is nothing sound to compare
    with."""


def require_recorded_champion(instance: dg.DagsterInstance, registry: ModelRegistry) -> None:
    """Dagster's record of the served model must be in the registry: a registry that lost it
    (BENTOML_HOME on a pod's ephemeral disk, another machine's store) would let any challenger
    through as if it were the first model."""
    events = [instance.get_latest_materialization_event(k) for k in (APPROVED_MODEL, SERVED_MODEL)]
    recorded = [e for e in events if e is not None and e.asset_materialization is not None]
    if not recorded:
        return
    event = max(recorded, key=lambda e: e.timestamp)
    asset = event.asset_materialization.asset_key.to_user_string()
    served = event.asset_materialization.metadata.get("served_tag")
    tag = served.value if served is not None else None
    if not tag or tag == "None":
        return
    try:
        recorded_model = registry.get(tag)
    except MissingArtifactError:
        raise MissingArtifactError(
            f"Dagster recorded {tag} as the served model ({asset} in run {event.run_id}), but "
            f"{registry.location()} does not hold it, so the gate has no champion "
            "to compare with. Point BENTOML_HOME at the model store the service and "
            "earlier runs used (a persistent volume, not a pod's ephemeral disk) and run again; "
            "nothing was approved."
        ) from None
    problems = registry.problems(tag)
    if recorded_model.labels.get("approved") == "true" and problems:
        # every reader skips it, so the challenger would meet an older model, or be judged as
        # a first model (the floor and the baseline): a lower bar than the champion's
        raise CorruptChampionError(
            f"Dagster recorded {tag} as the served model ({asset} in run {event.run_id}), but "
            f"its files in {registry.location()} are damaged ({'; '.join(problems[:3])}), so "
            "the gate has no champion to compare with; nothing was approved. Restore its "
            f"files, or take it out of service with the rollback job (tag: {tag}, reason, "
            "by), then run again"
        )


def label_mapping(champion: list[str], challenger: list[str]) -> np.ndarray:
    """Index array turning the champion's label ids into the challenger's, matched by name.
    Refused when the two classify into different classes: their scores mean different things."""
    if set(champion) != set(challenger) or len(champion) != len(challenger):
        raise LabelSetMismatchError(
            f"the champion's classes {champion} differ from the challenger's {challenger}: "
            "the two cannot be scored on the same labels. Set approved_model's force: true "
            "with a force_reason to approve the new label set (judged as a first model: floor "
            "and baseline), or keep the old classes in the source"
        )
    index = {name: i for i, name in enumerate(challenger)}
    return np.array([index[name] for name in champion], dtype=np.int64)


def champion_predictions(
    champion: RegisteredModel,
    store: ArtifactStore,
    splits: TextSplitsManifest,
    log: Log,
) -> np.ndarray:
    """The champion's predicted labels on the current test split, in its order and in the
    challenger's label ids: the ones recorded at its approval when the split is the same,
    recomputed otherwise."""
    names = list(champion.metadata.get("label_names") or splits.label_names)
    to_challenger = label_mapping(names, splits.label_names)
    recorded = champion.path / TEST_PREDICTIONS
    if champion.metadata.get("scores", {}).get("test_hash") == splits.test_hash and (
        recorded.is_file()
    ):
        predicted = pl.read_parquet(recorded)["predicted"].to_numpy()
    else:
        log(f"test split changed since {champion.tag} was approved: rescoring it")
        test = store.read_parquet(splits.paths["test"])
        predictor = load_classifier(champion.path, int(champion.metadata["max_length"]))
        predicted = predict(predictor, test["text"].to_list(), log, "rescoring champion").labels
    return to_challenger[predicted]


def champion_scores(
    predicted: np.ndarray, y_true: np.ndarray, splits: TextSplitsManifest, metric: str
) -> Scores:
    scored = score_predictions(
        y_true,
        np.eye(len(splits.label_names))[predicted],
        splits.label_names,
        EvaluationConfig(metric=metric),
    )
    return Scores(
        metric,
        scored["value"],
        tuple(scored["ci95"]),
        {k: v["f1"] for k, v in scored["per_class"].items()},
        splits.test_hash,
    )
