"""GX suite over `text_splits`: leaks, class coverage, empty texts, label shift, long texts."""

from __future__ import annotations

import great_expectations.expectations as gxe
import numpy as np
import polars as pl

from assets.data.splits import hashed_match_keys
from data_checks.gx_suite import ExpectationOutcome, validate
from data_checks.outcome import CheckOutcome, Severity


def stack_splits(splits: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One frame with a `split` column, in split order."""
    return pl.concat([frame.with_columns(split=pl.lit(name)) for name, frame in splits.items()])


def _frames_to_check(
    splits: dict[str, pl.DataFrame], label_names: list[str], token_counts
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The rows of every split with the per-row values GX judges (blank flag, token count, a
    dense id per distinct text), the first row of each (split, text), the rows per split and
    class, and the train/test class share shift."""
    stacked = stack_splits(splits)
    stacked = stacked.with_columns(
        is_blank=pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""),
        n_tokens=pl.Series(token_counts),
        # equal texts, equal ids; a copy that differs only in case, invisible characters,
        # compatibility forms or whitespace runs too (the key text_splits drops copies by)
        text_id=hashed_match_keys(stacked["text"]).rank("dense"),
    )
    # The first row of each (split, text): an id on two of them is a text in two splits. Found
    # by id, and filtered rather than made unique, so the texts are not copied.
    pairs = stacked.filter(pl.struct("split", "text_id").is_first_distinct())
    counts = _class_counts(stacked, list(splits), label_names)
    return stacked, pairs, counts, _class_share_shift(stacked, label_names)


def text_splits_outcomes(
    splits: dict[str, pl.DataFrame],
    label_names: list[str],
    token_counts: pl.Series | np.ndarray,
    min_per_class: int = 5,
    max_class_share_shift: float = 0.1,
    max_length: int = 128,
    max_long_share: float = 0.01,
) -> dict[str, CheckOutcome]:
    """`token_counts` holds the tokenizer's length of every text of `stack_splits(splits)`.

    GX judges per-row values polars computed (flags, token counts, a dense id per distinct
    text), never the texts themselves (see gx_suite); examples are the texts of the rows GX
    named."""
    stacked, pairs, counts, shift = _frames_to_check(splits, label_names, token_counts)
    met = _expectations(
        stacked, pairs, counts, shift, min_per_class, max_class_share_shift, max_length
    )
    leaks, coverage, blank, shifted, long = (
        met[name] for name in ("unique", "coverage", "blank", "shift", "long")
    )
    long_share = long.unexpected_count / max(long.element_count, 1)
    columns = ["split", "text", "label_name"]
    return {
        "no_text_in_two_splits": CheckOutcome(
            leaks.success,
            Severity.ERROR,
            "no text appears in more than one split (copies that differ only in case, "
            "invisible characters or whitespace count as the same text)",
            leaks.found(pairs, columns),
        ),
        "classes_in_every_split": CheckOutcome(
            coverage.success,
            Severity.ERROR,
            f"every class has at least {min_per_class} rows in every split",
            coverage.found(
                counts,
                ["split", "label_name", "rows"],
                rows_per_split_and_class={f"{s}/{n}": r for s, n, r in counts.iter_rows()},
            ),
        ),
        "no_empty_text": CheckOutcome(
            blank.success,
            Severity.ERROR,
            "no split holds an empty text",
            blank.found(stacked, columns),
        ),
        "class_share_shift": CheckOutcome(
            shifted.success,
            Severity.WARN,
            f"train and test class shares differ by at most {max_class_share_shift:.0%}",
            shifted.found(
                shift, shift.columns, max_abs_shift=float(shift["abs_shift"].max() or 0.0)
            ),
        ),
        "long_text_share": CheckOutcome(
            long_share <= max_long_share,
            Severity.WARN,
            f"{long_share:.2%} of texts are longer than max_length={max_length} tokens and "
            f"will be truncated (warn above {max_long_share:.0%})",
            long.found(
                stacked,
                [*columns, "n_tokens"],
                share=float(long_share),
                max_tokens=int(stacked["n_tokens"].max() or 0),
            ),
        ),
    }


def _expectations(
    stacked: pl.DataFrame,
    pairs: pl.DataFrame,
    counts: pl.DataFrame,
    shift: pl.DataFrame,
    min_per_class: int,
    max_class_share_shift: float,
    max_length: int,
) -> dict[str, ExpectationOutcome]:
    """GX's verdict on each frame: no blank or over-long text, no text id twice across
    splits, enough rows per split and class, a bounded class-share shift."""
    per_row = validate(
        stacked,
        {
            "blank": gxe.ExpectColumnValuesToBeInSet(column="is_blank", value_set=[False]),
            "long": gxe.ExpectColumnValuesToBeBetween(column="n_tokens", max_value=max_length),
        },
    )
    unique = {"unique": gxe.ExpectColumnValuesToBeUnique(column="text_id")}
    enough = {"min": gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=min_per_class)}
    bounded = {
        "max": gxe.ExpectColumnValuesToBeBetween(
            column="abs_shift", max_value=max_class_share_shift
        )
    }
    return {
        **per_row,
        "unique": validate(pairs, unique)["unique"],
        "coverage": validate(counts, enough)["min"],
        "shift": validate(shift, bounded)["max"],
    }


def _class_counts(stacked: pl.DataFrame, splits: list[str], label_names: list[str]) -> pl.DataFrame:
    """Rows per (split, class), zero rows included."""
    grid = pl.DataFrame({"split": splits}).join(
        pl.DataFrame({"label_name": label_names}), how="cross"
    )
    found = stacked.group_by("split", "label_name").agg(rows=pl.len().cast(pl.Int64))
    return grid.join(found, on=["split", "label_name"], how="left").with_columns(
        pl.col("rows").fill_null(0)
    )


def _class_share_shift(stacked: pl.DataFrame, label_names: list[str]) -> pl.DataFrame:
    """Per class: share in train, share in test, and their absolute difference."""
    shares = {}
    for split in ("train", "test"):
        part = stacked.filter(pl.col("split") == split)
        counts = dict(part.group_by("label_name").len().iter_rows())
        shares[split] = [counts.get(name, 0) / max(part.height, 1) for name in label_names]
    return pl.DataFrame(
        {
            "label_name": label_names,
            "train_share": shares["train"],
            "test_share": shares["test"],
        }
    ).with_columns(abs_shift=(pl.col("train_share") - pl.col("test_share")).abs())
