"""The textops code location: every asset, check, job and resource, from explicit lists."""

import os

import dagster as dg

from assets.approve import approved_model
from assets.evaluate import evaluation_report
from assets.package import bento
from assets.raw import raw_texts
from assets.splits import text_splits
from assets.train import fine_tuned_model
from data_checks.asset_checks import raw_texts_checks, text_splits_checks
from orchestration.resources import BentoModelStore, LocalArtifactStore, WandbTracker

ASSETS = [raw_texts, text_splits, fine_tuned_model, evaluation_report, approved_model, bento]
ASSET_CHECKS = [raw_texts_checks, text_splits_checks]

pipeline_job = dg.define_asset_job(
    "pipeline",
    selection=dg.AssetSelection.assets(*ASSETS),
    description="The whole asset graph, raw data to the last asset, with its blocking checks.",
)
JOBS = [pipeline_job]


def resources_for(environment: str) -> dict[str, object]:
    """Resources per deployment environment (TEXTOPS_ENV)."""
    by_environment = {
        "local": {
            "store": LocalArtifactStore(),
            "tracker": WandbTracker(),
            "registry": BentoModelStore(),
        },
    }
    if environment not in by_environment:
        raise ValueError(
            f"TEXTOPS_ENV={environment!r} is not one of {', '.join(sorted(by_environment))}"
        )
    return by_environment[environment]


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    resources=resources_for(os.environ.get("TEXTOPS_ENV", "local")),
)
