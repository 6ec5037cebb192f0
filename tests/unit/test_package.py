import pytest
import yaml

from assets.serving.package import ROOT, _bentoml, with_torch_wheel


def test_local_torch_wheel_replaces_torch_and_its_index(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"not really a wheel")
    out = with_torch_wheel(ROOT / "bento" / "bentofile.yaml", str(wheel), tmp_path / "b.yaml")
    python = yaml.safe_load(out.read_text())["python"]
    assert python["packages"][0] == f"./wheels/{wheel.name}"
    assert not any(p.startswith(("torch", "--extra-index-url")) for p in python["packages"])
    assert "transformers>=4.46,<6" in python["packages"]
    assert python["wheels"] == [f"build/wheels/{wheel.name}"]
    assert (ROOT / "build" / "wheels" / wheel.name).is_file()
    (ROOT / "build" / "wheels" / wheel.name).unlink()


def test_cpu_bentofile_takes_torch_from_the_cpu_index():
    python = yaml.safe_load((ROOT / "bento" / "bentofile.yaml").read_text())["python"]
    assert python["packages"][0].startswith("--extra-index-url")
    assert "torch==2.13.0" in python["packages"]
    gpu = yaml.safe_load((ROOT / "bento" / "bentofile.gpu.yaml").read_text())
    assert not any(p.startswith("--extra-index-url") for p in gpu["python"]["packages"])
    assert gpu["docker"]["cuda_version"]


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
