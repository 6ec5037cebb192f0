"""Numeric metadata: charted keys stay numbers, NaN and None are left out."""

import dagster as dg

from assets.metadata import class_shares, numeric_metadata


def test_floats_are_rounded_ints_kept_and_missing_values_dropped():
    metadata = numeric_metadata(
        {"f1": 0.123456789, "rows": 12, "champion": None, "delta": float("nan"), "flag": True}
    )
    assert metadata == {
        "f1": dg.MetadataValue.float(0.1235),
        "rows": dg.MetadataValue.int(12),
    }


def test_class_shares_include_the_minority_share():
    shares = class_shares({"pos": 30, "neg": 10})
    assert shares == {"share/pos": 0.75, "share/neg": 0.25, "share/minority": 0.25}
