"""The locks: made from the current inputs, installed as they are, and the same pins in every
derived lock."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
# tools of the environment itself, and textops (installed from the checkout)
NOT_LOCKED = {"pip", "textops"}


def locked(name: str) -> dict[str, str]:
    """package -> version of a lock's pins (names normalized)."""
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            pins[normalize(pin[1])] = pin[2]
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_was_made_from_the_current_inputs():
    check = subprocess.run(
        [sys.executable, "scripts/lock_inputs.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_a_changed_input_is_refused_with_what_to_run(tmp_path):
    import shutil

    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lock_inputs.py", tmp_path / "scripts")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"polars>=1.10"', '"polars>=1.11"'))
    check = subprocess.run(
        [sys.executable, "scripts/lock_inputs.py", "--check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert "requirements/textops.lock was not made from the current pyproject.toml" in check.stderr
    assert "Run scripts/lock.sh" in check.stderr


def test_every_installed_package_is_the_locked_version():
    cuda = "+" not in importlib.metadata.version("torch")  # scripts/install.sh --cuda
    lock = locked("textops-gpu.lock" if cuda else "textops.lock")
    installed = {
        normalize(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
    }
    unlocked = sorted(set(installed) - set(lock) - NOT_LOCKED)
    assert not unlocked, f"installed but not locked: {unlocked} (run scripts/install.sh)"
    other = {n: (v, lock[n]) for n, v in installed.items() if n in lock and v != lock[n]}
    assert not other, f"installed (version, locked version) differ: {other}"


def test_every_derived_lock_pins_what_the_main_lock_pins():
    main = locked("textops.lock")
    for name in sorted(p.name for p in LOCKS.glob("*.lock")):
        if name == "textops.lock":
            continue
        pins = locked(name)
        # the GPU locks add torch's CUDA build and what it brings (NVIDIA libraries, triton)
        exempt = {"torch"} | (set(pins) - set(main)) if name.endswith("-gpu.lock") else set()
        other = {
            p: (v, main.get(p)) for p, v in pins.items() if p not in exempt and main.get(p) != v
        }
        assert not other, f"{name} pins other versions than textops.lock: {other}"
    assert locked("bootstrap.lock")["torch"] == main["torch"] == "2.13.0+cpu"
    assert (
        locked("pipeline-image-gpu.lock")["torch"]
        == locked("bento-gpu.lock")["torch"]
        == ("2.13.0")
    )


def test_every_pin_carries_hashes():
    for path in LOCKS.glob("*.lock"):
        entries = re.split(r"\n(?=[A-Za-z0-9])", path.read_text().split("\n", 3)[-1])
        for entry in entries:
            if "==" in entry.split("\n", 1)[0]:
                assert "--hash=sha256:" in entry, (path.name, entry.split("\n", 1)[0])


def test_install_without_any_index_says_what_to_set(tmp_path):
    import os
    import shutil

    for name in ("pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("requirements", "scripts"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,  # none of this machine's indexes or wheel folders
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
    }
    result = subprocess.run(
        ["bash", "scripts/install.sh"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "export PIP_FIND_LINKS=/that/folder" in result.stderr
    assert "point TEXTOPS_TORCH_CPU_INDEX at a mirror of the PyTorch CPU index" in result.stderr
    assert not (tmp_path / ".venv" / "bin" / "uv").exists()
