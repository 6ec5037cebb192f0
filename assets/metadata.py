"""What an asset shows in the Dagster UI: numbers it can chart and markdown tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import dagster as dg


def numeric_metadata(
    values: Mapping[str, float | int | None], digits: int = 4
) -> dict[str, dg.MetadataValue]:
    """Ints stay ints, floats are rounded to `digits` decimals, None and NaN are left out (a
    missing point, not a NaN, is what the UI's plot of a key across materializations expects)."""
    metadata: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            metadata[key] = dg.MetadataValue.int(value)
        elif math.isfinite(value):
            metadata[key] = dg.MetadataValue.float(round(float(value), digits))
    return metadata


def class_shares(counts: Mapping[str, int], prefix: str = "share") -> dict[str, float]:
    """`{prefix}/<class>`: each class's share of the rows, and the smallest share."""
    total = sum(counts.values()) or 1
    shares = {f"{prefix}/{name}": count / total for name, count in counts.items()}
    shares[f"{prefix}/minority"] = min(counts.values(), default=0) / total
    return shares


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], align: str = ""
) -> list[str]:
    """Lines of a markdown table; `align` has one letter per column: l(eft), r(ight), c(enter)
    (default: the first column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
