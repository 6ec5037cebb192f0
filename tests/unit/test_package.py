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
    assert "extra_index_url" not in gpu["python"] and gpu["docker"]["cuda_version"]
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

    modules = {"bento/__init__.py", "bento/service.py"}
    pending = ["bento/service.py"]
    while pending:
        tree = ast.parse((ROOT / pending.pop()).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bento."):
                path = node.module.replace(".", "/") + ".py"
                if path not in modules:
                    modules.add(path)
                    pending.append(path)
    for name in BENTOFILES:
        included = set(yaml.safe_load((ROOT / "bento" / name).read_text())["include"])
        assert modules <= included, (name, modules - included)


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
