"""GX suite over `raw_texts`: schema, label set, null and empty texts."""

from __future__ import annotations

import great_expectations.expectations as gxe
import polars as pl

from data_checks.gx_suite import validate
from data_checks.outcome import CheckOutcome, Severity

RAW_COLUMN_TYPES = {"text": "str", "label": "int64", "label_name": "str", "source_split": "str"}
SCHEMA_ROWS = 1000


def raw_texts_outcomes(
    frame: pl.DataFrame,
    label_names: list[str],
    empty_warn_share: float = 0.001,
    empty_error_share: float = 0.05,
) -> dict[str, CheckOutcome]:
    """One outcome per concern: schema, labels_in_label_set, text_not_null, empty_text_share."""
    outcomes = {"schema": _schema(frame)}
    if not outcomes["schema"].passed:
        reason = "skipped: the schema check failed"
        for name in ("labels_in_label_set", "text_not_null", "empty_text_share"):
            outcomes[name] = CheckOutcome(False, Severity.ERROR, reason)
        return outcomes
    # GX judges what polars computed per row, not the texts themselves (see gx_suite): a text's
    # byte length is null exactly where the text is.
    checked = frame.select(
        "label",
        text_bytes=pl.col("text").str.len_bytes(),
        is_blank=pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""),
    )
    results = validate(
        checked,
        {
            "labels": gxe.ExpectColumnValuesToBeInSet(
                column="label", value_set=list(range(len(label_names)))
            ),
            "not_null": gxe.ExpectColumnValuesToNotBeNull(column="text_bytes"),
            "blank": gxe.ExpectColumnValuesToBeInSet(column="is_blank", value_set=[False]),
        },
    )
    columns = ["text", "label", "source_split"]
    labels = results["labels"]
    outcomes["labels_in_label_set"] = CheckOutcome(
        labels.success,
        Severity.ERROR,
        f"every label is one of {len(label_names)} ids {list(range(len(label_names)))}",
        labels.found(frame, columns),
    )
    not_null = results["not_null"]
    outcomes["text_not_null"] = CheckOutcome(
        not_null.success,
        Severity.ERROR,
        "no row has a null text",
        not_null.found(frame, columns),
    )
    blank = results["blank"]
    share = blank.unexpected_count / max(blank.element_count, 1)
    severity = Severity.ERROR if share > empty_error_share else Severity.WARN
    outcomes["empty_text_share"] = CheckOutcome(
        share <= empty_warn_share,
        severity,
        f"share of empty texts {share:.3%} (warn above {empty_warn_share:.1%}, "
        f"error above {empty_error_share:.0%})",
        blank.found(frame, columns, share=float(share)),
    )
    return outcomes


def _schema(frame: pl.DataFrame) -> CheckOutcome:
    """Columns and types, judged by GX on `schema_sample(frame)`."""
    expectations = {
        "columns": gxe.ExpectTableColumnsToMatchSet(
            column_set=list(RAW_COLUMN_TYPES), exact_match=True
        )
    }
    present = [c for c in RAW_COLUMN_TYPES if c in frame.columns]
    expectations |= {
        c: gxe.ExpectColumnValuesToBeOfType(column=c, type_=RAW_COLUMN_TYPES[c]) for c in present
    }
    results = validate(schema_sample(frame), expectations)
    failed = [name for name, result in results.items() if not result.success]
    return CheckOutcome(
        not failed,
        Severity.ERROR,
        "columns text (str), label (int64), label_name (str), source_split (str or null)",
        {
            "failed": failed,
            "columns": dict(zip(frame.columns, map(str, frame.dtypes), strict=True)),
        },
    )


def schema_sample(frame: pl.DataFrame) -> pl.DataFrame:
    """The first rows and each column's first null: the rows that give GX the frame's pandas
    types. A polars column has one type, and its pandas type depends only on that and on whether
    it has a null (integers with a null become floats), so these rows convert as all of them do,
    and the texts of the whole frame never become Python objects."""
    nulls = [int(frame[c].is_null().arg_max() or 0) for c in frame.columns if frame[c].null_count()]
    return frame[sorted({*range(min(SCHEMA_ROWS, frame.height)), *nulls})]
