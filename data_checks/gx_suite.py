"""Run Great Expectations 1.x expectations on a polars frame in an ephemeral context.

GX validates pandas, so what it is given is converted, and a text column in pandas is a Python
str per row: some 50 bytes more than the text, and four bytes a character in a text with an
emoji. Only the columns the expectations name are converted: the checks hand GX what they judge
(label ids, flags, lengths) and keep the texts in polars, where the examples are taken from by
row position. Results are summaries: counts and the first few offending rows, never a list of
every offending row."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class ExpectationOutcome:
    success: bool
    unexpected_count: int
    element_count: int
    unexpected_index: list[int]  # positions of the first MAX_EXAMPLES offending rows
    observed: Any

    def examples(self, frame: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
        """Up to five offending rows, texts cut to 200 characters."""
        rows = frame.select(columns)[self.unexpected_index[:MAX_EXAMPLES]].to_dicts()
        return [{k: (v[:200] if isinstance(v, str) else v) for k, v in row.items()} for row in rows]

    def found(self, frame: pl.DataFrame, columns: list[str], **more: Any) -> dict[str, Any]:
        """A check's metadata: how many rows offended, up to five of them, and `more`."""
        return {
            "unexpected_count": self.unexpected_count,
            "examples": self.examples(frame, columns),
            **more,
        }


@functools.cache
def _batch_definition():
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(),
        ),
    )
    source = context.data_sources.add_pandas("textops")
    return source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole")


def validate(frame: pl.DataFrame, expectations: dict[str, Any]) -> dict[str, ExpectationOutcome]:
    """Validate `frame` against named GX expectations as one suite; results by name. Only the
    columns the expectations name are converted for GX, all of them if one judges the table."""
    import great_expectations as gx

    batch_definition = _batch_definition()  # creates the context the suite needs
    suite = gx.ExpectationSuite(name="textops")
    for name, expectation in expectations.items():
        expectation.meta = {**(expectation.meta or {}), "check": name}
        suite.add_expectation(expectation)
    validated = frame.select(judged_columns(frame, expectations.values())).to_pandas()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": validated})
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    results = batch.validate(suite, result_format=result_format).results
    by_name = {result.expectation_config.meta["check"]: result for result in results}
    outcomes = {}
    for name in expectations:
        result = by_name[name]
        details = result.result or {}
        outcomes[name] = ExpectationOutcome(
            success=bool(result.success),
            unexpected_count=int(details.get("unexpected_count") or 0),
            element_count=int(details.get("element_count") or frame.height),
            unexpected_index=[int(i) for i in details.get("partial_unexpected_index_list") or []],
            observed=details.get("observed_value"),
        )
    return outcomes


def judged_columns(frame: pl.DataFrame, expectations: Iterable[Any]) -> list[str]:
    """The columns of `frame` the expectations read, in frame order; every column when one of
    them judges the table (its column set) rather than a column."""
    named = set()
    for expectation in expectations:
        column = getattr(expectation, "column", None)
        if column is None:
            return frame.columns
        named.add(column)
    return [column for column in frame.columns if column in named]
