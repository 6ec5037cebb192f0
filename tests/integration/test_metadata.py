"""What the UI shows first: every graph asset's headline numbers, as chartable numbers."""

import math

import dagster as dg
import pytest

HEADLINE = {
    "raw_texts": ["dagster/row_count", "share/minority"],
    "text_splits": ["train_rows", "validation_rows", "test_rows", "dropped_total"],
    "fine_tuned_model": ["best_val_macro_f1", "train_samples_per_s", "wall_time_s"],
    "evaluation_report": [
        "macro_f1",
        "macro_f1_ci_low",
        "macro_f1_ci_high",
        "baseline_macro_f1",
        "f1/positive",
        "f1/negative",
        "latency_ms_p95",
    ],
    "approved_model": ["challenger_macro_f1"],
}


@pytest.mark.parametrize("asset", sorted(HEADLINE))
def test_headline_numbers_are_finite_numbers(approved_graph, asset):
    metadata = approved_graph["result"].asset_materializations_for_node(asset)[0].metadata
    for key in HEADLINE[asset]:
        assert isinstance(metadata[key], dg.FloatMetadataValue | dg.IntMetadataValue), key
    for key, value in metadata.items():
        if isinstance(value, dg.FloatMetadataValue):
            assert math.isfinite(value.value), key
            assert value.value == round(value.value, 4), key


def test_first_approval_has_no_champion_numbers(approved_graph):
    result = approved_graph["result"]
    metadata = result.asset_materializations_for_node("approved_model")[0].metadata
    assert "champion_macro_f1" not in metadata and "delta" not in metadata
    assert metadata["summary"].value.startswith("approved: macro F1 ")
