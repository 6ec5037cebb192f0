"""The textops code location: every asset, check, job and resource, from explicit lists."""

import os

import dagster as dg

from assets.data.raw import raw_texts
from assets.data.splits import text_splits
from assets.interfaces.manifests import MANIFEST_IO
from assets.interfaces.store import ArtifactStore
from assets.model.evaluate import evaluation_report
from assets.model.train import fine_tuned_model
from assets.monitoring.drift import drift_report
from assets.monitoring.serving_log import serving_log
from assets.serving.approve import approved_model
from assets.serving.package import bento
from assets.serving.served import served_model
from assets.serving.variants import serving_variants
from data_checks.asset_checks import (
    drift_check,
    latency_slo_check,
    raw_texts_checks,
    text_splits_checks,
)
from orchestration.automation import (
    REGRESSION,
    drift_sensor,
    monitoring_automation,
    new_data_sensor,
    retrain_job,
    retrain_schedule,
    sensor_status,
)
from orchestration.resources import (
    BentoModelStore,
    LocalArtifactStore,
    LocalTorchrunLauncher,
    ManifestIOManager,
    WandbTracker,
)
from orchestration.rollout_sensors import live_model_sensor, regression_sensor

TRAINING_GRAPH = [
    raw_texts,
    text_splits,
    fine_tuned_model,
    evaluation_report,
    serving_variants,
    approved_model,
    served_model,
    bento,
]
# monitoring runs by itself on a cron (declarative automation), one switch in the UI
MONITORING, monitoring_sensor = monitoring_automation([serving_log, drift_report])
ASSETS = [*TRAINING_GRAPH, *MONITORING]
ASSET_CHECKS = [raw_texts_checks, text_splits_checks, latency_slo_check, drift_check]

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
rollback_job = dg.define_asset_job(
    "rollback",
    selection=dg.AssetSelection.assets(served_model, bento),
    config=dg.ConfigMapping(
        config_fn=lambda given: {
            "ops": {
                "served_model": {
                    "config": {
                        "rollback_tag": given["tag"],
                        "rollback_reason": given["reason"],
                        "rollback_by": given["by"],
                    }
                }
            }
        },
        config_schema={
            "tag": dg.Field(
                str,
                description="The served model's tag (served_model's served_tag): the model "
                "withdrawn; a rollback run again finds it withdrawn and changes nothing",
            ),
            "reason": dg.Field(str, description="Why the served model is withdrawn"),
            "by": dg.Field(str, default_value="", description="Who withdraws it"),
        },
    ),
    description="Withdraw the served model (its labels say who, why and when), serve the "
    "previous approved model again and build its bento; needs only the model store (no "
    "training run); running services switch back once they have verified it. Run config: tag "
    "and reason (required), by.",
)
JOBS = [pipeline_job, retrain, monitor_job, rollback_job]
SCHEDULES = [retrain_schedule(retrain)]
SENSORS = [
    monitoring_sensor,
    new_data_sensor(retrain),
    drift_sensor(retrain),
    live_model_sensor(),
    regression_sensor(rollback_job, sensor_status(REGRESSION)),
]


def pipeline_resources(store: ArtifactStore) -> dict[str, object]:
    """Every resource the assets use, over one artifact store: manifests go to the same store
    as the artifacts they describe."""
    return {
        "store": store,
        MANIFEST_IO: ManifestIOManager(store=store),
        "tracker": WandbTracker(),
        "registry": BentoModelStore(),
        "launcher": training_launcher(os.environ.get("TEXTOPS_EXECUTOR", "multiprocess")),
    }


def _local() -> dict[str, object]:
    return pipeline_resources(LocalArtifactStore())


def _gcp() -> dict[str, object]:
    from orchestration.resources.gcs_store import GcsArtifactStore

    # resolved by Dagster when a run starts; an unset prefix keeps the field's default
    prefix = (
        {"prefix": dg.EnvVar("TEXTOPS_GCS_PREFIX")} if "TEXTOPS_GCS_PREFIX" in os.environ else {}
    )
    store = GcsArtifactStore(bucket=dg.EnvVar("TEXTOPS_GCS_BUCKET"), **prefix)
    return pipeline_resources(store)


ENVIRONMENTS = {"local": _local, "gcp": _gcp}


def resources_for(environment: str) -> dict[str, object]:
    """Resources per deployment environment (TEXTOPS_ENV), built only for the one chosen."""
    if environment not in ENVIRONMENTS:
        raise ValueError(
            f"TEXTOPS_ENV={environment!r} is not one of {', '.join(sorted(ENVIRONMENTS))}"
        )
    return ENVIRONMENTS[environment]()


def executor_for(name: str):
    """TEXTOPS_EXECUTOR: `multiprocess` (default), `docker` (each step its own container on
    this machine, through a Docker API such as podman's socket; needs dagster-docker) or `k8s`
    (each step its own pod; needs dagster-k8s); see docs/deploy.md."""
    if name == "multiprocess":
        return None
    if name == "docker":
        from dagster_docker import docker_executor

        return docker_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"TEXTOPS_EXECUTOR={name!r} is not one of multiprocess, docker, k8s")


def training_launcher(executor: str):
    """Where torchrun's processes run: beside the step, or with TEXTOPS_EXECUTOR=k8s in training
    pods of their own, configured from TEXTOPS_TRAINING_* and TEXTOPS_SHARED_* (docs/deploy.md)."""
    if executor == "k8s":
        from orchestration.resources.k8s_training import K8sTorchrunLauncher

        return K8sTorchrunLauncher.from_env()
    return LocalTorchrunLauncher()


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=ASSET_CHECKS,
    jobs=JOBS,
    schedules=SCHEDULES,
    sensors=SENSORS,
    resources=resources_for(os.environ.get("TEXTOPS_ENV", "local")),
    executor=executor_for(os.environ.get("TEXTOPS_EXECUTOR", "multiprocess")),
)
