"""A BigQuery source query is one read-only SELECT with a bounded bill, as BigQuery itself
reads it; checked against a fake client that records every call (no network)."""

from types import SimpleNamespace

import pandas as pd
import pytest

from assets.data.sources import transports
from assets.data.sources.formats import SourceError
from assets.data.sources.transports import is_script, read_bigquery, read_source

ROWS = pd.DataFrame({"text": ["good", "bad"], "label": ["pos", "neg"]})
QUERY = "bigquery:SELECT text, label FROM tweets.labelled"


class FakeClient:
    """Answers a dry run with `statement_type` and `processed` bytes, and a query or a table
    read with ROWS; `calls` lists what was asked, with the job config's settings."""

    def __init__(self, statement_type: str = "SELECT", processed: int = 2048) -> None:
        self.statement_type, self.processed = statement_type, processed
        self.calls: list[tuple] = []

    def query(self, sql, job_config=None):
        dry_run, billed = bool(job_config.dry_run), job_config.maximum_bytes_billed
        self.calls.append(("query", sql, dry_run, billed))
        if job_config.dry_run:
            return SimpleNamespace(
                statement_type=self.statement_type, total_bytes_processed=self.processed
            )
        return SimpleNamespace(to_dataframe=lambda: ROWS)

    def list_rows(self, table):
        self.calls.append(("list_rows", table))
        return SimpleNamespace(to_dataframe=lambda: ROWS)


def test_a_script_is_refused_before_any_client_exists(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(transports, "bigquery_client", lambda: made.append(1))
    with pytest.raises(SourceError, match="more than one SQL statement"):
        read_source("bigquery:SELECT 1; DROP TABLE x", tmp_path, print)
    assert made == []
    client = FakeClient()
    with pytest.raises(SourceError, match="is one read-only SELECT"):
        read_bigquery(client, "bigquery:WITH t AS (SELECT 1) SELECT * FROM t;\nDELETE x", print)
    assert client.calls == []


@pytest.mark.parametrize(
    "sql, script",
    [
        ("SELECT 1;", False),
        ("SELECT 1; -- the end", False),
        ("SELECT 'a;b' AS text, \"c;\" AS label /* ; */ FROM `p.d.t;x` # ;", False),
        ("SELECT '''x\n;y''' AS text", False),
        ("SELECT 1; SELECT 2", True),
        ("SELECT 'it\\'s'; DROP TABLE x", True),
    ],
)
def test_is_script_looks_past_strings_and_comments(sql, script):
    assert is_script(sql) is script


@pytest.mark.parametrize("statement_type", ["DELETE", "SCRIPT", "CREATE_TABLE_AS_SELECT"])
def test_a_dry_run_that_is_not_a_select_is_refused(statement_type):
    client = FakeClient(statement_type=statement_type)
    with pytest.raises(SourceError) as refused:
        read_bigquery(client, QUERY, print)
    assert f"BigQuery reads this as a {statement_type} statement" in str(refused.value)
    assert "Nothing was run" in str(refused.value)
    assert client.calls == [("query", QUERY.removeprefix("bigquery:"), True, None)]


def test_a_query_over_the_byte_cap_is_refused(monkeypatch):
    monkeypatch.setenv("TEXTOPS_BIGQUERY_MAX_BYTES", "1000")
    client = FakeClient(processed=5000)
    with pytest.raises(SourceError) as refused:
        read_bigquery(client, QUERY, print)
    assert "would process 5,000 bytes, more than the cap of 1,000 bytes" in str(refused.value)
    assert "set TEXTOPS_BIGQUERY_MAX_BYTES to a larger number of bytes" in str(refused.value)
    assert [call[2] for call in client.calls] == [True]  # the dry run only

    monkeypatch.setenv("TEXTOPS_BIGQUERY_MAX_BYTES", "-1")
    with pytest.raises(SourceError, match="TEXTOPS_BIGQUERY_MAX_BYTES='-1': expected a positive"):
        read_bigquery(FakeClient(), QUERY, print)


def test_the_query_runs_with_maximum_bytes_billed(monkeypatch):
    client = FakeClient()
    source = read_bigquery(client, QUERY, print)
    assert source.label_names == ["neg", "pos"]
    sql = QUERY.removeprefix("bigquery:")
    assert client.calls == [("query", sql, True, None), ("query", sql, False, 10 * 1024**3)]

    monkeypatch.setenv("TEXTOPS_BIGQUERY_MAX_BYTES", "4096")
    client = FakeClient()
    read_bigquery(client, QUERY, print)
    assert client.calls[-1] == ("query", sql, False, 4096)


def test_a_table_is_read_without_a_query():
    client = FakeClient()
    read_bigquery(client, "bigquery://project.tweets.labelled", print)
    assert client.calls == [("list_rows", "project.tweets.labelled")]
