"""`served_model`: the model the registry serves (its champion), read from the registry alone, so
that it and the bento built from it need no training history. The `rollback` job materializes it
with a rollback: the served model is withdrawn with a reason, and the previous approved model is
the champion again (running services follow it as soon as they have verified it). A rollback
names the tag it withdraws, so running it again (a retry, a second click, the regression sensor
after the service withdrew a model itself) finds that model withdrawn and changes nothing."""

import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.manifests import MANIFEST_IO, ServedModelManifest, as_output
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import DecisionRecord, ExperimentTracker, location_metadata
from assets.tracking import stored_model_files, tracking_context
from assets.versioning import run_version, source_version

APPROVED_MODEL = dg.AssetKey("approved_model")


class ServedModelConfig(dg.Config):
    rollback_tag: str = Field(
        "",
        description="With a rollback: the served model's tag, withdrawn (the rollback job sets "
        "it from its `tag`); a rollback run again finds it withdrawn and changes nothing",
    )
    rollback_reason: str = Field(
        "",
        description="Why the served model is withdrawn (required with a rollback); "
        "kept in its labels",
    )
    rollback_by: str = Field("", description="Who withdraws it (default: $USER)")

    @property
    def rolls_back(self) -> bool:
        return bool(self.rollback_tag.strip() or self.rollback_reason.strip())


def withdraw_or_confirm(
    tag: str, reason: str, by: str, registry: ModelRegistry
) -> tuple[RegisteredModel, RegisteredModel, bool]:
    """(the withdrawn model, the one served now, whether this call withdrew it)."""
    with registry.exclusive():
        approved = registry.approved()
        served = approved[0] if approved else None
        if served is not None and served.tag == tag:
            if len(approved) < 2:
                raise ValueError(
                    f"nothing to roll back to: {tag} is the only approved model in "
                    f"{registry.location()}; a rollback needs an earlier approved one"
                )
            return registry.withdraw(tag, reason, by), approved[1], True
        try:
            named = registry.get(tag)
        except MissingArtifactError:
            raise ValueError(
                f"rollback tag {tag} is not in {registry.location()}; name the served model "
                f"({served.tag if served else 'none is served'})"
            ) from None
        if named.labels.get("withdrawn") == "true" and served is not None:
            return named, served, False
        if named.labels.get("approved") == "true" and registry.problems(tag) and served:
            # approved, but skipped by every reader since its files broke: the service serves
            # `served` already; the rollback makes the registry say so
            return registry.withdraw(tag, reason, by), served, True
        raise ValueError(
            f"{tag} is not the served model ({served.tag if served else 'none is served'}), "
            "so nothing was withdrawn: a rollback withdraws the model being served, named by "
            "its tag (served_model's served_tag)"
        )


def roll_back(
    context: dg.AssetExecutionContext,
    config: ServedModelConfig,
    store: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> dict[str, Any]:
    """Withdraws the served model; returns the rollback's record."""
    tag, reason = config.rollback_tag.strip(), config.rollback_reason.strip()
    if not reason:
        raise ValueError("a rollback needs a reason: say why the served model goes")
    if not tag:
        raise ValueError(
            "a rollback needs the tag of the served model it withdraws (served_model's "
            "served_tag, or `bentoml models list textops-classifier`)"
        )
    by = config.rollback_by.strip() or os.environ.get("USER") or "unknown"
    withdrawn, served, changed = withdraw_or_confirm(tag, reason, by, registry)
    if changed:
        summary = f"rolled back: withdrew {withdrawn.tag} ({reason}; by {by}); serving {served.tag}"
    else:
        summary = (
            f"already rolled back: {withdrawn.tag} was withdrawn at "
            f"{withdrawn.labels.get('withdrawn_at', '?')}; serving {served.tag}; nothing changed"
        )
    context.log.info(summary)
    record = {
        "summary": summary,
        "withdrawn": withdrawn.tag,
        "reason": reason,
        "by": by,
        "at": datetime.now(UTC).isoformat(),
        "changed": changed,
        "trigger": context.run.tags.get("textops/trigger", "manual"),
        "withdrawn_labels": withdrawn.labels,
    }
    record["tracked"] = tracker.log_decision(
        tracking_context(context, served.labels.get("data_version")),
        DecisionRecord(
            False,
            summary,
            {"approved": False, "summary": summary, "rollback": record, "served_tag": served.tag},
            model=None,
            champion=tracked_model(store, served) if changed else None,
            withdrawn=tracked_model(store, withdrawn) if changed else None,
        ),
    )
    return record


def tracked_model(store: ArtifactStore, model: RegisteredModel):
    """A registered model's files in the artifact store, when its labels name its version."""
    version = model.labels.get("model_version")
    return stored_model_files(store, version, {"tag": model.tag}) if version else None


@dg.asset(
    group_name="serving",
    kinds={"bentoml"},
    deps=[APPROVED_MODEL],
    io_manager_key=MANIFEST_IO,
    code_version=source_version(__name__),
    description="The model the registry serves (its champion), read from the registry; the "
    "rollback job withdraws it here. Running services follow it: their live model, shadow "
    "numbers and switches are recorded as observations of this asset.",
)
def served_model(
    context: dg.AssetExecutionContext,
    config: ServedModelConfig,
    store: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> dg.Output[ServedModelManifest]:
    rollback = roll_back(context, config, store, registry, tracker) if config.rolls_back else None
    served = registry.champion()
    if served is None:
        raise MissingArtifactError(
            f"no approved model in {registry.location()}: run the pipeline until approved_model "
            "approves one"
        )
    summary = rollback["summary"] if rollback else f"serving {served.tag}, the registry's champion"
    record = {
        "served_tag": served.tag,
        "labels": served.labels,
        "summary": summary,
        "rollback": rollback,
        "dagster_run_id": context.run_id,
    }
    version = run_version(served.tag.split(":")[-1], context.run_id)
    manifest = ServedModelManifest.save(store, version, record, served.tag, served.labels)
    return as_output(
        manifest,
        {
            "served_tag": dg.MetadataValue.text(served.tag),
            "summary": dg.MetadataValue.text(summary),
            "rollback": bool(rollback),
            **(
                {
                    "withdrawn_tag": dg.MetadataValue.text(rollback["withdrawn"]),
                    "rollback_reason": dg.MetadataValue.text(rollback["reason"]),
                    "trigger": dg.MetadataValue.text(rollback["trigger"]),
                }
                if rollback
                else {}
            ),
            "lineage": dg.MetadataValue.json(served.labels),
            **location_metadata(rollback.get("tracked", "") if rollback else ""),
        },
    )
