import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from assets.serving.package import ROOT, _bentoml, bentofile_for, installs_torch, with_torch_wheel

BENTOFILES = ["bentofile.yaml", "bentofile.torch.yaml", "bentofile.gpu.yaml"]


def locked(path) -> dict[str, str]:
    """name -> version of a lock file's pins."""
    pins = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#", "-")):
            name, version = line.split(" ")[0].split("==")
            pins[name.lower()] = version
    return pins


def test_local_torch_wheel_replaces_the_torch_index_and_keeps_the_lock(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    out = with_torch_wheel(ROOT / "bento" / "bentofile.torch.yaml", str(wheel), tmp_path / "b.yaml")
    python = yaml.safe_load(out.read_text())["python"]
    assert python["requirements_txt"] == "requirements/bento-torch.lock"
    assert "extra_index_url" not in python
    assert python["wheels"] == [f"build/wheels/{wheel.name}"]
    assert python["find_links"] == ["wheels"]
    assert (ROOT / "build" / "wheels" / wheel.name).is_file()
    (ROOT / "build" / "wheels" / wheel.name).unlink()


def test_every_bento_installs_its_lock_and_the_cpu_one_takes_torch_from_the_cpu_index():
    torch = yaml.safe_load((ROOT / "bento" / "bentofile.torch.yaml").read_text())["python"]
    assert torch["extra_index_url"] == ["https://download.pytorch.org/whl/cpu"]
    assert locked(ROOT / "requirements" / "bento-torch.lock")["torch"].endswith("+cpu")
    gpu = yaml.safe_load((ROOT / "bento" / "bentofile.gpu.yaml").read_text())
    assert "extra_index_url" not in gpu["python"]
    assert "+" not in locked(ROOT / "requirements" / "bento-gpu.lock")["torch"]
    for name in BENTOFILES:
        python = yaml.safe_load((ROOT / "bento" / name).read_text())["python"]
        assert python["lock_packages"] is False, name  # the lock decides, not a build-time resolve
        assert (ROOT / python["requirements_txt"]).is_file(), name


def test_each_variant_gets_an_image_with_what_it_runs_on_and_no_more():
    assert bentofile_for("onnx-int8") == bentofile_for("onnx-fp32") == "bento/bentofile.yaml"
    assert bentofile_for("pytorch") == "bento/bentofile.torch.yaml"
    onnx = locked(ROOT / "requirements" / "bento-onnx.lock")
    assert {"onnxruntime", "tokenizers", "bentoml"} <= set(onnx)
    assert not {"torch", "transformers"} & set(onnx)
    assert not installs_torch(ROOT / "bento" / "bentofile.yaml")
    assert installs_torch(ROOT / "bento" / "bentofile.torch.yaml")


def test_every_bentofile_carries_every_module_the_service_imports():
    import ast
    from fnmatch import fnmatch

    modules = {"bento/__init__.py", "bento/service.py", "textops_core/__init__.py"}
    pending = ["bento/service.py"]
    while pending:
        tree = ast.parse((ROOT / pending.pop()).read_text())
        for node in ast.walk(tree):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.startswith(("bento.", "textops_core.")):
                path = module.replace(".", "/") + ".py"
                if path not in modules:
                    modules.add(path)
                    pending.append(path)
    assert "textops_core/registry.py" in modules  # the shared core, followed from the service
    for name in BENTOFILES:
        patterns = yaml.safe_load((ROOT / "bento" / name).read_text())["include"]
        missing = {m for m in modules if not any(fnmatch(m, p) for p in patterns)}
        assert not missing, (name, missing)


def cuda_of(lock: dict[str, str]) -> set[str]:
    """The CUDA releases a lock's NVIDIA packages are built for: the runtime's major version and
    every -cuNN suffix."""
    majors = (
        {f"cu{lock['nvidia-cuda-runtime'].split('.')[0]}"}
        if "nvidia-cuda-runtime" in lock
        else set()
    )
    return majors | {name.rsplit("-", 1)[1] for name in lock if re.search(r"-cu\d+$", name)}


def rendered_dockerfile(bentofile: str) -> str:
    """The Dockerfile BentoML writes into a bento built from `bentofile` (in a process of its
    own: reading a bentofile sets BentoML's build arguments for the whole process)."""
    code = (
        "import sys, tempfile, pathlib\n"
        "from bentoml._internal.bento.build_config import BentoBuildConfig\n"
        f"config = BentoBuildConfig.from_yaml(open({bentofile!r})).with_defaults()\n"
        "folder = pathlib.Path(tempfile.mkdtemp())\n"
        "config.docker.write_to_bento(folder, '.', config.conda)\n"
        "sys.stdout.write((folder / 'env' / 'docker' / 'Dockerfile').read_text())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_gpu_images_carry_one_cuda_the_one_torchs_wheels_bring():
    gpu = yaml.safe_load((ROOT / "bento" / "bentofile.gpu.yaml").read_text())
    assert not {"cuda_version", "base_image"} & set(gpu["docker"])
    for lock_name in ("bento-gpu.lock", "pipeline-image-gpu.lock"):
        lock = locked(ROOT / "requirements" / lock_name)
        assert lock["torch"] == "2.13.0" and cuda_of(lock) == {"cu13"}, lock_name
    dockerfile = rendered_dockerfile("bento/bentofile.gpu.yaml")
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["python:3.11-slim"]
    capabilities = re.search(r"^ARG NVIDIA_DRIVER_CAPABILITIES=(\S+)", dockerfile, re.MULTILINE)
    assert "compute" in capabilities.group(1).split(",")
    # the pipeline image, with --build-arg TORCH=cuda too: one plain Python base
    pipeline = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", pipeline, re.MULTILINE) == ["python:3.11-slim"]
    assert "requirements/pipeline-image-gpu.lock" in pipeline


def test_only_the_gpu_bento_declares_a_gpu(tmp_path):
    """The service's `resources` as each bento's build and serve see it: its bentofile's
    arguments set, then the service imported (pinned to a tag, so no model store is read)."""
    code = (
        "import json, sys\n"
        "from bentoml._internal.bento.build_config import BentoBuildConfig\n"
        "BentoBuildConfig.from_yaml(open(sys.argv[1]))\n"
        "import bento.service\n"
        "print(json.dumps(bento.service.TextClassifier.config.get('resources')))\n"
    )
    env = {
        **os.environ,
        "TEXTOPS_MODEL_TAG": "textops-classifier:pinned",
        "BENTOML_HOME": str(tmp_path),
    }
    declared = {}
    for name in BENTOFILES:
        result = subprocess.run(
            [sys.executable, "-c", code, f"bento/{name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        declared[name] = json.loads(result.stdout.strip().splitlines()[-1])
    assert declared == {
        "bentofile.yaml": None,
        "bentofile.torch.yaml": None,
        "bentofile.gpu.yaml": {"gpu": 1},
    }


def test_bentoml_output_reaches_the_log_with_a_heartbeat_while_quiet():
    logs: list[str] = []
    # `bentoml list` is quiet for longer than 0.05 s while Python starts
    _bentoml("list", "-o", "json", log=logs.append, every_s=0.05)
    assert any(line.startswith("bentoml list: still running after") for line in logs)


def test_failed_bentoml_command_raises_with_its_stderr():
    logs: list[str] = []
    with pytest.raises(RuntimeError, match="bentoml get no-such-bento:v1` failed") as error:
        _bentoml("get", "no-such-bento:v1", log=logs.append)
    assert "no-such-bento" in str(error.value)
    assert any(line.startswith("bentoml get: ") for line in logs)


def test_every_bento_module_the_service_imports_is_in_every_bento():
    import re

    def imported(module: str) -> set[str]:
        source = (ROOT / "bento" / f"{module}.py").read_text()
        return set(re.findall(r"^\s*from bento\.(\w+) import", source, re.MULTILINE))

    needed, todo = {"service"}, ["service"]
    while todo:
        for module in imported(todo.pop()) - needed:
            needed.add(module)
            todo.append(module)
    for name in BENTOFILES:
        included = yaml.safe_load((ROOT / "bento" / name).read_text())["include"]
        missing = {f"bento/{m}.py" for m in needed} - set(included)
        assert not missing, f"{name} lacks {sorted(missing)}"
