"""A model made ready to serve, off the request path: its files checked against their checksums,
its serving variant chosen by timing the variants that passed parity on this machine, warmed, and
its labels on the sample its approval recorded reproduced. Anything that fails raises
NotServable, and the model is not served."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textops_core.inference import (
    VARIANT_FILES,
    Predictor,
    label_names,
    load_predictor,
    serving_settings,
)
from textops_core.registry import CHECKSUMS_FILE, integrity_problems
from textops_core.runtime import check_runtime
from textops_core.settings import ServiceSettings

logger = logging.getLogger("textops.service")

VERIFICATION_FILE = "verification.json"  # test texts and each variant's labels at approval
# A recorded label must be reproduced unless the approval's own probabilities were this close
# between the top two classes: another CPU's rounding may tip a near tie, never a clear call.
NEAR_TIE = 0.05
TIMING_PASSES = 3


class NotServable(Exception):
    """The model failed a check before taking traffic; the service keeps its current model."""


class ModelNotInStore(NotServable):
    """A model the service is to serve is not in the BentoML model store it reads."""


def not_in_store(tag: str, store: Path) -> ModelNotInStore:
    return ModelNotInStore(
        f"model {tag} is not in the BentoML model store at {store}: its folder was removed, or "
        f"never put there, and the service loads models from that store only (it never "
        f"downloads one). Put the model back (`bentoml models import`), or serve one the store "
        f"holds (`bentoml models list`, TEXTOPS_MODEL_TAG)"
    )


@dataclass
class ServedModel:
    """One loaded model and what the service says of it."""

    tag: str
    path: Path
    labels: dict[str, str]
    metadata: dict[str, Any]
    variant: str
    why: str  # why this variant, on this machine
    predictor: Predictor
    label_names: list[str]
    verified: str  # what was checked before it took traffic
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    expected_mix: dict[str, float] = field(default_factory=dict)


def read_verification(path: Path) -> dict[str, Any] | None:
    file = Path(path) / VERIFICATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def eligible_variants(path: Path, settings: dict[str, Any]) -> list[str]:
    """The variants this model may serve on: the ONNX ones that passed parity at approval and
    whose files it has, and PyTorch only when the approval chose it (a CPU image has no torch)."""
    scored = settings.get("variants", {})
    found = [
        name
        for name, file in VARIANT_FILES.items()
        if scored.get(name, {}).get("passed") and (Path(path) / file).is_file()
    ]
    if settings.get("variant") == "pytorch" or not found:
        found.append(settings.get("variant", "pytorch"))
    return list(dict.fromkeys(found))


def pace(predictor: Predictor, texts: list[str]) -> dict[str, float]:
    """Texts/s of `predictor` here, in batches of 32 and one text at a time (best of a few
    passes: a neighbour's burst slows one pass, never speeds one up)."""
    batch = (texts * (32 // max(len(texts), 1) + 1))[:32]
    alone = texts[:16]
    batch_s = min(_timed(lambda: predictor.predict_proba(batch)) for _ in range(TIMING_PASSES))
    alone_s = min(_timed(lambda: [predictor.predict_proba([t]) for t in alone]) for _ in range(2))
    rates = {"texts_per_s": len(batch) / batch_s, "alone_texts_per_s": len(alone) / alone_s}
    rates["score"] = float(np.sqrt(rates["texts_per_s"] * rates["alone_texts_per_s"]))
    return rates


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return max(time.perf_counter() - started, 1e-9)


@dataclass(frozen=True)
class LoadOptions:
    """How this process runs the models it loads: the service's settings, read once."""

    threads: int = 0  # 0: one per physical core
    micro_batch: int = 32
    pinned_variant: str = ""  # TEXTOPS_VARIANT: serve this variant, untimed
    spin: bool = True  # ONNX Runtime's threads spin between calls
    runtime_check: str = "warn"  # or "refuse" a variant whose packages differ from its parity's

    @classmethod
    def of(cls, settings: ServiceSettings, threads: int) -> LoadOptions:
        return cls(
            threads,
            settings.micro_batch,
            settings.variant,
            settings.ort_spin,
            settings.runtime_check,
        )


def load_served(
    tag: str,
    path: Path,
    labels: dict[str, str],
    metadata: dict[str, Any],
    options: LoadOptions,
) -> ServedModel:
    """The model at `path` verified, timed, warmed and ready; NotServable when a check fails."""
    path = Path(path)
    if not (path / CHECKSUMS_FILE).is_file():
        raise NotServable(f"{tag} has no {CHECKSUMS_FILE}: its files cannot be verified")
    problems = integrity_problems(path, full=True)
    if problems:
        raise NotServable(f"{tag}: its files do not match their checksums ({'; '.join(problems)})")
    try:
        settings = serving_settings(path)
        names = label_names(path)
        sample = read_verification(path)
        texts = (sample or {}).get("texts") or ["warm up", "what a wonderful day"]
        choices = (
            [options.pinned_variant]
            if options.pinned_variant
            else eligible_variants(path, settings)
        )
        max_length = int(metadata.get("max_length", settings.get("max_length", 128)))
        loaded, timings = _load_variants(tag, path, settings, choices, max_length, texts, options)
    except NotServable:
        raise
    except Exception as error:  # any failure to load means: not served
        raise NotServable(f"{tag} could not be loaded: {type(error).__name__}: {error}") from None
    variant, why = _choose(choices, timings, settings, options.pinned_variant)
    predictor = loaded[variant]
    loaded.clear()  # the other variants' sessions are let go
    verified = verify_labels(tag, variant, predictor, names, sample)
    return ServedModel(
        tag=tag,
        path=path,
        labels=labels,
        metadata=metadata,
        variant=variant,
        why=why,
        predictor=predictor,
        label_names=names,
        verified=verified,
        timings=timings,
        expected_mix=(sample or {}).get("label_mix", {}),
    )


def _load_variants(
    tag: str,
    path: Path,
    settings: dict[str, Any],
    choices: list[str],
    max_length: int,
    texts: list[str],
    options: LoadOptions,
) -> tuple[dict[str, Predictor], dict[str, dict[str, float]]]:
    """Each variant of `choices` loaded and warmed, and timed when there is a choice."""
    timings: dict[str, dict[str, float]] = {}
    loaded: dict[str, Predictor] = {}
    for variant in choices:
        check_runtime(tag, variant, settings, options.runtime_check)
        predictor = load_predictor(
            path, max_length, variant, options.threads, options.micro_batch, spin=options.spin
        )
        predictor.predict_proba(texts[:1])  # the first call allocates
        loaded[variant] = predictor
        if len(choices) > 1:
            timings[variant] = pace(predictor, texts)
    return loaded, timings


def _choose(
    choices: list[str],
    timings: dict[str, dict[str, float]],
    settings: dict[str, Any],
    pinned_variant: str,
) -> tuple[str, str]:
    """(the variant served, why): the pinned one, the only one, or the fastest here."""
    if pinned_variant:
        return pinned_variant, "pinned by TEXTOPS_VARIANT"
    if len(choices) == 1:
        why = f"the only variant that passed parity at approval ({settings.get('why', '')})"
        return choices[0], why
    variant = max(timings, key=lambda v: timings[v]["score"])
    why = (
        "fastest here of those that passed parity: "
        + ", ".join(
            f"{v} {t['texts_per_s']:.0f} texts/s in batches, {t['alone_texts_per_s']:.0f} alone"
            for v, t in sorted(timings.items(), key=lambda kv: -kv[1]["score"])
        )
        + f" (the approval's machine chose {settings.get('variant')})"
    )
    return variant, why


def verify_labels(
    tag: str, variant: str, predictor: Predictor, names: list[str], sample: dict | None
) -> str:
    """Checks that the model labels its approval's sample as recorded; says what it checked."""
    recorded = (sample or {}).get("variants", {}).get(variant)
    if not recorded:
        return "checksums (no labels recorded for this variant at approval)"
    texts = sample["texts"]
    probabilities = predictor.predict_proba(texts)
    got = probabilities.argmax(axis=1)
    expected = np.array(recorded["labels"])
    clear = np.array(recorded["margins"]) >= NEAR_TIE
    wrong = np.flatnonzero((got != expected) & clear)
    if wrong.size:
        first = int(wrong[0])
        raise NotServable(
            f"{tag} ({variant}) labels {wrong.size} of {int(clear.sum())} clear texts of its "
            f"approval's sample otherwise than recorded (e.g. text {first}: "
            f"{names[got[first]]}, recorded {names[expected[first]]})"
        )
    return f"checksums and {int(clear.sum())} of {len(texts)} recorded labels (the rest near ties)"


def release_memory() -> None:
    """Hands the memory of models let go back to the system: glibc keeps freed blocks for reuse,
    and each loaded-then-dropped model leaves its blocks behind (benchmarks/rollout.py's
    switches); elsewhere a no-op."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
