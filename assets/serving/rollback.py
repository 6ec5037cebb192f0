"""A rollback, recorded as a decision of `approved_model`: the served model is withdrawn with a
reason, and the previous approved model is the champion again (the `bento` asset then builds
for it)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from assets.interfaces.manifests import DecisionManifest, as_output
from assets.interfaces.registry import ModelRegistry
from assets.interfaces.store import ArtifactStore


def roll_back(
    context: dg.AssetExecutionContext,
    reason: str,
    by: str,
    store: ArtifactStore,
    registry: ModelRegistry,
) -> dg.Output[DecisionManifest]:
    if not reason.strip():
        raise ValueError("a rollback needs rollback_reason: say why the served model goes")
    by = by.strip() or os.environ.get("USER") or "unknown"
    with registry.exclusive():
        approved = registry.approved()
        if len(approved) < 2:
            raise ValueError(
                f"nothing to roll back to: {len(approved)} approved model(s) in the registry; "
                "a rollback needs the served model and an earlier approved one"
            )
        current, previous = approved[0], approved[1]
        withdrawn = registry.withdraw(current.tag, reason.strip(), by)
    summary = (
        f"rolled back: withdrew {current.tag} ({reason.strip()}; by {by}); "
        f"serving {previous.tag} again"
    )
    context.log.info(summary)
    record = {
        "approved": False,
        "forced": False,
        "summary": summary,
        "rollback": {
            "withdrawn": current.tag,
            "reason": reason.strip(),
            "by": by,
            "at": datetime.now(UTC).isoformat(),
            "withdrawn_labels": withdrawn.labels,
        },
        "served_tag": previous.tag,
        "dagster_run_id": context.run_id,
    }
    version = f"rollback-{context.run_id[:8]}"
    manifest = DecisionManifest.save(store, version, record, False, previous.tag, previous.labels)
    return as_output(
        manifest,
        {
            "approved": False,
            "forced": False,
            "rollback": True,
            "summary": dg.MetadataValue.text(summary),
            "decision": dg.MetadataValue.md(f"**{summary}**"),
            "served_tag": dg.MetadataValue.text(previous.tag),
            "withdrawn_tag": dg.MetadataValue.text(current.tag),
        },
    )
