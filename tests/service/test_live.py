"""A model made ready to serve (textops_core/live.py): verified against its checksums and its
approval's recorded labels, its variant chosen by timing on this machine; anything wrong refuses
it."""

import json
import shutil
from pathlib import Path

import pytest

from textops_core.live import LoadOptions, NotServable, eligible_variants, load_served
from textops_core.registry import read_entries, write_checksums


@pytest.fixture
def model_copy(approved_graph, tmp_path):
    """A copy of the session's approved model folder, and its registry entry."""
    import bentoml

    stored = bentoml.models.get(approved_graph["tag"])
    folder = tmp_path / "model"
    shutil.copytree(stored.path, folder)
    (entry,) = [e for e in read_entries(Path(stored.path).parents[1]) if e.tag == str(stored.tag)]
    return folder, entry


def load(folder: Path, entry, variant: str = ""):
    options = LoadOptions(threads=1, micro_batch=32, pinned_variant=variant)
    return load_served(entry.tag, folder, entry.labels, entry.metadata, options)


def test_a_model_is_verified_timed_and_chosen_on_this_machine(model_copy):
    folder, entry = model_copy
    settings = json.loads((folder / "serving.json").read_text())
    eligible = eligible_variants(folder, settings)
    model = load(folder, entry)
    assert model.variant in eligible
    assert model.verified.startswith("checksums and ") and "recorded labels" in model.verified
    assert sum(model.expected_mix.values()) == pytest.approx(1.0)
    if len(eligible) > 1:
        assert set(model.timings) == set(eligible)
        assert model.why.startswith("fastest here of those that passed parity: ")
        assert all(
            t["texts_per_s"] > 0 and t["alone_texts_per_s"] > 0 for t in model.timings.values()
        )
    pinned = load(folder, entry, "onnx-fp32")
    assert pinned.variant == "onnx-fp32" and pinned.why == "pinned by TEXTOPS_VARIANT"


def test_a_model_whose_files_changed_is_refused(model_copy):
    folder, entry = model_copy
    weights = folder / "onnx" / "model.onnx"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(NotServable, match="onnx/model.onnx does not match its sha256"):
        load(folder, entry)


def test_a_model_that_labels_its_recorded_sample_otherwise_is_refused(model_copy):
    folder, entry = model_copy
    sample = json.loads((folder / "verification.json").read_text())
    recorded = sample["variants"]["onnx-fp32"]
    clear = [i for i, m in enumerate(recorded["margins"]) if m >= 0.05]
    assert clear, "the tiny model answers its sample clearly"
    recorded["labels"][clear[0]] = 1 - recorded["labels"][clear[0]]
    (folder / "verification.json").write_text(json.dumps(sample))
    write_checksums(folder)  # as if it had been approved so
    with pytest.raises(NotServable, match=r"labels 1 of \d+ clear texts of its approval's sample"):
        load(folder, entry, "onnx-fp32")


def test_a_model_that_cannot_load_is_refused_with_the_reason(model_copy):
    folder, entry = model_copy
    (folder / "tokenizer.json").write_text("{not json")
    write_checksums(folder)
    with pytest.raises(NotServable, match="could not be loaded"):
        load(folder, entry)


def test_a_model_without_checksums_is_never_served(model_copy):
    folder, entry = model_copy
    (folder / "checksums.json").unlink()
    with pytest.raises(NotServable, match="has no checksums.json: its files cannot be verified"):
        load(folder, entry)


@pytest.mark.parametrize("damaged", ["{", "[]", '{"model.onnx": {"sha256": "ab"}}', "null"])
def test_a_damaged_checksums_file_is_a_problem_never_an_exception(model_copy, damaged):
    from textops_core.registry import integrity_problems

    folder, entry = model_copy
    (folder / "checksums.json").write_text(damaged)
    (problem,) = integrity_problems(folder)
    assert problem.startswith("checksums.json ")
    with pytest.raises(NotServable, match="its files do not match their checksums"):
        load(folder, entry)
