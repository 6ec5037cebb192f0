"""scripts/bootstrap.sh (the first step of scripts/install.sh) on a machine as it comes: pip
has no folder of wheels and no extra index, so it finds no torch CPU build; the install takes
it from the PyTorch CPU index by itself, here a local index standing in for it, with the lock's
hashes still checking every wheel."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cpu_torch_wheel

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ["-r", "requirements/uv.lock", "-r", "requirements/bootstrap.lock"]


def stand_in_index(folder: Path, wheel: Path) -> str:
    """A PEP 503 index at `folder` holding `wheel` as torch's only file; its URL."""
    project = folder / "simple" / "torch"
    project.mkdir(parents=True)
    (project / wheel.name).symlink_to(wheel)
    (project / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
    return (folder / "simple").as_uri()


def bootstrap(venv: Path, index: str) -> subprocess.CompletedProcess:
    """scripts/bootstrap.sh with none of pip's settings (no configuration file, no find-links,
    no extra index) and `index` for the PyTorch CPU index."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"}
    }
    env |= {"PIP_CONFIG_FILE": os.devnull, "TEXTOPS_TORCH_CPU_INDEX": index}
    return subprocess.run(
        ["bash", "scripts/bootstrap.sh", str(venv), *BOOTSTRAP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def local_wheel() -> Path:
    wheel = cpu_torch_wheel()
    if wheel is None:
        if os.environ.get("CI"):
            pytest.fail("no local CPU torch wheel (/opt/wheels or TEXTOPS_TORCH_WHEEL)")
        pytest.skip("no local CPU torch wheel (/opt/wheels or TEXTOPS_TORCH_WHEEL)")
    return Path(wheel)


@pytest.mark.slow  # pip installs uv from PyPI and torch from the stand-in (about a minute)
def test_the_install_takes_torch_from_the_cpu_index_by_itself(tmp_path):
    index = stand_in_index(tmp_path / "index", local_wheel())
    venv = tmp_path / "venv"
    result = bootstrap(venv, index)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "scripts/bootstrap.sh: pip finds no torch CPU build where it looks; taking it from "
        f"{index} (hashes checked)"
    ]
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
         "print(m.version('torch'), m.version('uv'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert version.stdout.split() == ["2.13.0+cpu", "0.13.9"]


@pytest.mark.slow
def test_a_wheel_the_lock_does_not_know_is_refused(tmp_path):
    impostor = tmp_path / "wheels" / local_wheel().name
    impostor.parent.mkdir()
    impostor.write_bytes(b"not the locked torch")
    result = bootstrap(tmp_path / "venv", stand_in_index(tmp_path / "index", impostor))
    assert result.returncode == 1
    assert "DO NOT MATCH THE HASHES" in result.stderr
    assert "point TEXTOPS_TORCH_CPU_INDEX at a mirror" in result.stderr
