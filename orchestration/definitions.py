"""The textops code location: every asset, check, job and resource, from explicit lists."""

import os

import dagster as dg

from assets.approve import approved_model
from assets.drift import drift_check, drift_report
from assets.evaluate import evaluation_report
from assets.package import bento
from assets.raw import raw_texts
from assets.serving_log import serving_log
from assets.splits import text_splits
from assets.train import fine_tuned_model
from data_checks.asset_checks import raw_texts_checks, text_splits_checks
from orchestration.automation import (
    drift_sensor,
    new_data_sensor,
    retrain_job,
    retrain_schedule,
)
from orchestration.resources import BentoModelStore, LocalArtifactStore, WandbTracker

TRAINING_GRAPH = [
    raw_texts,
    text_splits,
    fine_tuned_model,
    evaluation_report,
    approved_model,
    bento,
]
MONITORING = [serving_log, drift_report]
ASSETS = [*TRAINING_GRAPH, *MONITORING]
ASSET_CHECKS = [raw_texts_checks, text_splits_checks, drift_check]

pipeline_job = dg.define_asset_job(
    "pipeline",
    selection=dg.AssetSelection.assets(*TRAINING_GRAPH),
    description="The whole training graph, raw data to the bento, with its blocking checks.",
)
retrain = retrain_job(TRAINING_GRAPH)
monitor_job = dg.define_asset_job(
    "monitor",
    selection=dg.AssetSelection.assets(*MONITORING),
    description="Read the serving log and compare it with the training data.",
)
JOBS = [pipeline_job, retrain, monitor_job]
SCHEDULES = [retrain_schedule(retrain)]
SENSORS = [new_data_sensor(retrain), drift_sensor(retrain)]


def _local() -> dict[str, object]:
    return {"store": LocalArtifactStore(), "tracker": WandbTracker(), "registry": BentoModelStore()}


def _gcp() -> dict[str, object]:
    from dagster_gcp import GCSResource

    from orchestration.gcs import GcsArtifactStore

    gcs = GCSResource(project=dg.EnvVar("GOOGLE_CLOUD_PROJECT"))
    store = GcsArtifactStore(
        gcs=gcs,
        bucket=dg.EnvVar("TEXTOPS_GCS_BUCKET"),
        prefix=os.environ.get("TEXTOPS_GCS_PREFIX", "textops"),
    )
    return {"store": store, "tracker": WandbTracker(), "registry": BentoModelStore()}


ENVIRONMENTS = {"local": _local, "gcp": _gcp}


def resources_for(environment: str) -> dict[str, object]:
    """Resources per deployment environment (TEXTOPS_ENV), built only for the one chosen."""
    if environment not in ENVIRONMENTS:
        raise ValueError(
            f"TEXTOPS_ENV={environment!r} is not one of {', '.join(sorted(ENVIRONMENTS))}"
        )
    return ENVIRONMENTS[environment]()


def executor_for(name: str):
    """TEXTOPS_EXECUTOR: `multiprocess` (default) or `k8s` (each step its own pod; needs
    dagster-k8s, see docs/deploy.md)."""
    if name == "multiprocess":
        return None
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"TEXTOPS_EXECUTOR={name!r} is not one of multiprocess, k8s")


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=resources_for(os.environ.get("TEXTOPS_ENV", "local")),
    executor=executor_for(os.environ.get("TEXTOPS_EXECUTOR", "multiprocess")),
)
