"""Concrete resources: the implementations of the interfaces in `assets/interfaces` (the GCS
store, which needs the `gcp` extra, is imported from `orchestration.resources.gcs_store`)."""

from orchestration.resources.bento_registry import BentoModelStore
from orchestration.resources.local_store import LocalArtifactStore
from orchestration.resources.manifest_io import ManifestIOManager
from orchestration.resources.torchrun import LocalTorchrunLauncher
from orchestration.resources.wandb_tracker import WandbTracker

__all__ = [
    "BentoModelStore",
    "LocalArtifactStore",
    "LocalTorchrunLauncher",
    "ManifestIOManager",
    "WandbTracker",
]
