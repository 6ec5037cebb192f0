"""`bento`: `bentoml build` of bento/ for the approved model, labelled with its lineage."""

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import yaml
from pydantic import Field

from assets.interfaces.manifests import ServedModelManifest
from assets.metadata import numeric_metadata
from assets.progress import Log
from assets.versioning import source_version

ROOT = Path(__file__).resolve().parents[2]


class BentoConfig(dg.Config):
    bentofile: str = Field(
        "",
        description="Build file relative to the repository root; empty: the one the served "
        "variant needs (bento/bentofile.yaml for ONNX Runtime, no torch; "
        "bento/bentofile.torch.yaml for PyTorch); bento/bentofile.gpu.yaml for a CUDA image",
    )
    torch_wheel: str = Field(
        "",
        description="A local torch wheel to put in the bento instead of torch from an "
        "index (e.g. a CPU build on a machine without the PyTorch index), when the build file "
        "installs torch at all; empty: as the build file says",
    )


def bentofile_for(variant: str) -> str:
    """The build file whose image carries what `variant` runs on, and nothing more."""
    return "bento/bentofile.yaml" if variant.startswith("onnx-") else "bento/bentofile.torch.yaml"


def locked_requirements(bentofile: Path) -> Path:
    """The lock a build file installs (python.requirements_txt, relative to the root)."""
    python = yaml.safe_load(bentofile.read_text()).get("python", {})
    if "requirements_txt" not in python:
        raise ValueError(f"{bentofile} installs no lock (python.requirements_txt)")
    return ROOT / python["requirements_txt"]


def installs_torch(bentofile: Path) -> bool:
    return any(
        line.startswith("torch==") for line in locked_requirements(bentofile).read_text().split()
    )


def with_torch_wheel(bentofile: Path, wheel: str, out: Path) -> Path:
    """A copy of `bentofile` whose image takes torch from `wheel`, carried in the bento, instead
    of from the PyTorch index. The lock still decides: pip checks the wheel against torch's
    locked hash, so it must be the locked build."""
    source = Path(wheel).expanduser().resolve()
    if not source.is_file() or source.suffix != ".whl":
        raise ValueError(f"torch_wheel {wheel!r} is not a wheel file")
    # bentoml takes wheels by a path inside the build context only
    wheel_path = ROOT / "build" / "wheels" / source.name
    if not wheel_path.is_file():
        wheel_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, wheel_path)
    spec = yaml.safe_load(bentofile.read_text())
    python = spec.setdefault("python", {})
    python.pop("extra_index_url", None)
    python.pop("pip_args", None)
    python["wheels"] = [str(wheel_path.relative_to(ROOT))]
    # the image installs the lock from env/python, where the bento keeps its wheels
    python["find_links"] = ["wheels"]
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def _bentoml(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: int = 900,
    log: Log | None = None,
    every_s: float = 15.0,
) -> str:
    """stdout of `bentoml *args`; with `log`, its stderr lines as they come and a line every
    `every_s` seconds while it is quiet, so a long build shows that it is alive."""
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **(env or {})},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stdout: list[str] = []
    readers = [
        threading.Thread(target=_drain, args=(process.stderr, lines), daemon=True),
        threading.Thread(target=lambda: stdout.extend(process.stdout), daemon=True),
    ]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    stderr: list[str] = []
    while (line := _next_line(lines, started + timeout, every_s)) is not None:
        if time.monotonic() > started + timeout:
            process.kill()
            raise RuntimeError(f"`bentoml {args[0]}` did not finish in {timeout} s")
        if line == "":
            if log:
                log(f"bentoml {args[0]}: still running after {time.monotonic() - started:.0f} s")
            continue
        stderr.append(line)
        if log and line.strip():
            log(f"bentoml {args[0]}: {line.rstrip()}")
    process.wait()
    for reader in readers:
        reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"`bentoml {' '.join(args)}` failed:\n{''.join(stderr)[-4000:]}")
    return "".join(stdout)


def _drain(stream, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _next_line(lines: queue.Queue[str | None], deadline: float, every_s: float) -> str | None:
    """The next stderr line, None at its end, "" when nothing came for `every_s` seconds."""
    try:
        return lines.get(timeout=max(min(every_s, deadline - time.monotonic()), 0.01))
    except queue.Empty:
        return ""


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bento_labels(served_model: ServedModelManifest, run_id: str) -> dict[str, str]:
    """The bento's labels: the model it serves, the run, and the served model's own lineage,
    whether this run approved it or an earlier one did."""
    labels = {"model_tag": served_model.tag, "dagster_run_id": run_id}
    return labels | {
        key: served_model.labels[key]
        for key in ("data_version", "raw_data_version", "model_version", "code_version")
        if key in served_model.labels
    }


def build_bento(
    bentofile_name: str, torch_wheel: str, model_tag: str, labels: dict[str, str], log: Log
) -> str:
    """`bentoml build` of the service for `model_tag` with `labels`; returns the bento's tag."""
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    with tempfile.TemporaryDirectory() as scratch:
        bentofile = ROOT / bentofile_name
        if torch_wheel and installs_torch(bentofile):
            bentofile = with_torch_wheel(bentofile, torch_wheel, Path(scratch) / "bentofile.yaml")
        output = _bentoml(
            "build", "-f", str(bentofile), str(ROOT), "--output", "tag", *label_args,
            env={"TEXTOPS_MODEL_TAG": model_tag}, log=log,
        )  # fmt: skip
    return output.strip().splitlines()[-1].removeprefix("__tag__:")


def bento_metadata(tag: str, model_tag: str, variant: str, bentofile_name: str) -> dict:
    """What the UI shows of the bento: its tag, where it is, its size with the model, and the
    command that containerizes it."""
    path = Path(_bentoml("get", tag, "-o", "path").strip())
    # BentoML keeps the model in its model store and copies it in on export / containerize.
    model_path = Path(_bentoml("models", "get", model_tag, "-o", "path").strip())
    return {
        "bento_tag": dg.MetadataValue.text(tag),
        "serving_variant": dg.MetadataValue.text(variant),
        "bentofile": dg.MetadataValue.text(bentofile_name),
        "model_tag": dg.MetadataValue.text(model_tag),
        **numeric_metadata(
            {"size_mb_with_model": (folder_size(path) + folder_size(model_path)) / 1e6}
        ),
        "dockerfile": dg.MetadataValue.path(str(path / "env" / "docker" / "Dockerfile")),
        "bento_path": dg.MetadataValue.path(str(path)),
        "containerize": dg.MetadataValue.text(f"scripts/containerize.sh {tag}"),
    }


@dg.asset(
    group_name="serving",
    kinds={"bentoml", "docker"},
    # the bento carries the service's code, so that code is part of this asset's version
    code_version=source_version(__name__, "bento.service"),
    description="A bento of the service in bento/ serving the approved model; containerize it "
    "with `bentoml containerize <tag>` or scripts/containerize.sh.",
)
def bento(
    context: dg.AssetExecutionContext, config: BentoConfig, served_model: ServedModelManifest
) -> dg.MaterializeResult:
    model_tag = served_model.tag
    variant = served_model.labels.get("serving_variant", "pytorch")
    bentofile_name = config.bentofile or bentofile_for(variant)
    context.log.info(f"bentoml build of {bentofile_name} for {model_tag} ({variant})")
    started = time.monotonic()
    labels = bento_labels(served_model, context.run_id)
    tag = build_bento(bentofile_name, config.torch_wheel, model_tag, labels, context.log.info)
    metadata = bento_metadata(tag, model_tag, variant, bentofile_name)
    size = metadata["size_mb_with_model"].value
    context.log.info(
        f"built {tag} in {time.monotonic() - started:.0f} s ({size:.1f} MB with the model)"
    )
    return dg.MaterializeResult(data_version=dg.DataVersion(tag), metadata=metadata)
