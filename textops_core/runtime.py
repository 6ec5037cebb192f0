"""The runtime a model is served on: the host's usable cores, and the versions of the packages
each serving variant runs on, which the parity check records (serving.json) and the service
compares with its own at start."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("textops.service")

# What each variant's numbers depend on: the parity check records these versions in
# serving.json, and the service compares them with its own at start.
RUNTIME_PACKAGES = {
    "onnx-int8": ("onnxruntime", "tokenizers", "numpy"),
    "onnx-fp32": ("onnxruntime", "tokenizers", "numpy"),
    "pytorch": ("torch", "transformers", "tokenizers", "numpy"),
}


def physical_cores() -> int:
    """Physical cores this process may run on (at least 1)."""
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(psutil.cpu_count(logical=False) or 1, usable or 1))


def installed_versions(packages: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    names = packages or tuple(sorted({p for ps in RUNTIME_PACKAGES.values() for p in ps}))
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def runtime_mismatches(recorded: dict[str, str | None], variant: str) -> list[str]:
    """The packages `variant` runs on whose installed version differs from the one its parity
    check ran under (`recorded`, from serving.json); empty when they match or nothing was
    recorded."""
    installed = installed_versions(RUNTIME_PACKAGES.get(variant, ()))
    return [
        f"{name} {installed[name] or 'not installed'} (parity ran under {recorded[name]})"
        for name in installed
        if recorded.get(name) and installed[name] != recorded[name]
    ]


RUNTIME_CHECK_ENV = "TEXTOPS_RUNTIME_CHECK"


def check_runtime(tag: str, variant: str, settings: dict, mode: str = "warn") -> None:
    """Warn, or refuse with `mode` refuse (TEXTOPS_RUNTIME_CHECK), when the packages this
    variant runs on are not the versions its parity check ran under: the metrics the gate
    recorded would not be the metrics of what serves."""
    problems = runtime_mismatches(settings.get("runtime", {}), variant)
    if not problems:
        return
    message = (
        f"{tag} ({variant}) runs under other versions than its parity check: "
        f"{'; '.join(problems)}. Its approval's numbers may not hold here; build the image "
        f"from the bento (it installs requirements/bento-*.lock) or refresh the locks and "
        f"approve again"
    )
    if mode == "refuse":
        raise RuntimeError(message + f" ({RUNTIME_CHECK_ENV}=refuse)")
    logger.warning(message)
