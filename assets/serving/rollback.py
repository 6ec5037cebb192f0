"""A rollback, recorded as a decision of `approved_model`: the served model is withdrawn with a
reason, and the previous approved model is the champion again (the `bento` asset then builds
for it). A rollback names the tag it withdraws, so running it again (a retry, a second click)
finds that model already withdrawn and changes nothing."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from assets.interfaces.errors import MissingArtifactError
from assets.interfaces.manifests import DecisionManifest, as_output
from assets.interfaces.registry import ModelRegistry, RegisteredModel
from assets.interfaces.store import ArtifactStore
from assets.interfaces.tracker import (
    Decision,
    ExperimentTracker,
    location_metadata,
)
from assets.tracking import stored_model_files, tracking_context


def _withdraw_or_confirm(
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
        raise ValueError(
            f"{tag} is not the served model ({served.tag if served else 'none is served'}), "
            "so nothing was withdrawn: a rollback withdraws the model being served, named by "
            "its tag (approved_model's served_tag)"
        )


def roll_back(
    context: dg.AssetExecutionContext,
    tag: str,
    reason: str,
    by: str,
    store: ArtifactStore,
    registry: ModelRegistry,
    tracker: ExperimentTracker,
) -> dg.Output[DecisionManifest]:
    if not reason.strip():
        raise ValueError("a rollback needs rollback_reason: say why the served model goes")
    if not tag.strip():
        raise ValueError(
            "a rollback needs rollback_tag: the tag of the served model it withdraws "
            "(approved_model's served_tag, or `bentoml models list textops-classifier`)"
        )
    by = by.strip() or os.environ.get("USER") or "unknown"
    withdrawn, served, changed = _withdraw_or_confirm(tag.strip(), reason.strip(), by, registry)
    if changed:
        summary = (
            f"rolled back: withdrew {withdrawn.tag} ({reason.strip()}; by {by}); "
            f"serving {served.tag} again"
        )
    else:
        summary = (
            f"already rolled back: {withdrawn.tag} was withdrawn at "
            f"{withdrawn.labels.get('withdrawn_at', '?')}; serving {served.tag}; nothing changed"
        )
    context.log.info(summary)
    record = {
        "approved": False,
        "forced": False,
        "summary": summary,
        "rollback": {
            "withdrawn": withdrawn.tag,
            "reason": reason.strip(),
            "by": by,
            "at": datetime.now(UTC).isoformat(),
            "changed": changed,
            "withdrawn_labels": withdrawn.labels,
        },
        "served_tag": served.tag,
        "dagster_run_id": context.run_id,
    }
    version = f"rollback-{context.run_id[:8]}"
    manifest = DecisionManifest.save(store, version, record, False, served.tag, served.labels)
    tracked = tracker.log_decision(
        tracking_context(context, served.labels.get("data_version")),
        Decision(
            False,
            summary,
            record,
            model=None,
            champion=tracked_model(store, served) if changed else None,
            withdrawn=tracked_model(store, withdrawn) if changed else None,
        ),
    )
    return as_output(
        manifest,
        {
            "approved": False,
            "forced": False,
            "rollback": True,
            "summary": dg.MetadataValue.text(summary),
            "decision": dg.MetadataValue.md(f"**{summary}**"),
            "served_tag": dg.MetadataValue.text(served.tag),
            "withdrawn_tag": dg.MetadataValue.text(withdrawn.tag),
            **location_metadata(tracked),
        },
    )


def tracked_model(store: ArtifactStore, model: RegisteredModel):
    """A registered model's files in the artifact store, when its labels name its version."""
    version = model.labels.get("model_version")
    return stored_model_files(store, version, {"tag": model.tag}) if version else None
