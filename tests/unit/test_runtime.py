import logging

import pytest

from textops_core.runtime import check_runtime, installed_versions, runtime_mismatches
from textops_core.settings import service_settings


def test_a_runtime_like_the_one_parity_ran_under_passes():
    recorded = installed_versions()
    assert recorded["onnxruntime"] and recorded["tokenizers"]
    assert runtime_mismatches(recorded, "onnx-int8") == []
    assert runtime_mismatches({}, "pytorch") == []  # a model approved before runtimes were kept


def test_another_onnxruntime_is_named_with_both_versions(caplog, monkeypatch):
    recorded = {**installed_versions(), "onnxruntime": "1.0.0", "torch": "0.1"}
    problems = runtime_mismatches(recorded, "onnx-int8")
    assert problems == [
        f"onnxruntime {installed_versions()['onnxruntime']} (parity ran under 1.0.0)"
    ]
    caplog.set_level(logging.WARNING, "textops.service")
    check_runtime("m:1", "onnx-int8", {"runtime": recorded})
    assert "m:1 (onnx-int8) runs under other versions than its parity check" in caplog.text
    monkeypatch.setenv("TEXTOPS_RUNTIME_CHECK", "refuse")
    with pytest.raises(RuntimeError, match="parity ran under 1.0.0"):
        check_runtime("m:1", "onnx-int8", {"runtime": recorded}, service_settings().runtime_check)
    monkeypatch.setenv("TEXTOPS_RUNTIME_CHECK", "sometimes")
    with pytest.raises(ValueError, match="TEXTOPS_RUNTIME_CHECK='sometimes': Input should be"):
        service_settings()


def test_a_package_missing_from_the_image_is_named():
    problems = runtime_mismatches({"onnxruntime": "1.0", "not-a-package": "1"}, "onnx-int8")
    assert problems[0].startswith("onnxruntime ")
    recorded = {"torch": "2.13.0+cpu"}
    assert all("not installed" not in p for p in runtime_mismatches(recorded, "onnx-fp32"))
