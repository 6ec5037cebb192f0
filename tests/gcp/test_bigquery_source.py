"""BigQuery sources against a mocked client (no BigQuery emulator exists here)."""

from unittest import mock

import pandas as pd
import pytest

from assets.data.sources import transports as sources
from assets.data.sources.formats import SourceError
from assets.data.sources.transports import read_bigquery, read_source

ROWS = pd.DataFrame(
    {
        "text": ["good", "bad", "fine"],
        "label": ["pos", "neg", "pos"],
        "split": ["train", "test", "validation"],
    }
)


def test_table_and_query_sources():
    client = mock.Mock()
    client.list_rows.return_value.to_dataframe.return_value = ROWS
    table = read_bigquery(client, "bigquery://my-project.tweets.labelled", print)
    client.list_rows.assert_called_once_with("my-project.tweets.labelled")
    assert table.label_names == ["neg", "pos"]
    assert table.frame["source_split"].to_list() == ["train", "test", "validation"]

    client.query.return_value.statement_type = "SELECT"  # the dry run's answer
    client.query.return_value.total_bytes_processed = 1024
    client.query.return_value.to_dataframe.return_value = ROWS[["text", "label"]]
    query = read_bigquery(client, "bigquery:SELECT text, label FROM tweets.labelled", print)
    dry_run, real = client.query.call_args_list
    assert dry_run.args == real.args == ("SELECT text, label FROM tweets.labelled",)
    assert dry_run.kwargs["job_config"].dry_run and real.kwargs["job_config"].maximum_bytes_billed
    assert query.frame["source_split"].null_count() == 3


def test_bigquery_errors_are_named():
    client = mock.Mock()
    client.list_rows.return_value.to_dataframe.return_value = ROWS.drop(columns="text")
    with pytest.raises(SourceError, match="no 'text' column"):
        read_bigquery(client, "bigquery://tweets.labelled", print)
    client.list_rows.side_effect = RuntimeError("403 Access Denied")
    with pytest.raises(SourceError, match="BigQuery read failed: 403 Access Denied"):
        read_bigquery(client, "bigquery://tweets.labelled", print)
    with pytest.raises(SourceError, match="expected bigquery://"):
        read_bigquery(client, "bigquery://just-a-name", print)


def test_read_source_goes_through_the_dagster_gcp_resource(tmp_path, monkeypatch):
    client = mock.Mock()
    client.list_rows.return_value.to_dataframe.return_value = ROWS
    context = mock.MagicMock()
    context.__enter__.return_value = client
    monkeypatch.setattr(sources, "bigquery_client", lambda: context)
    source = read_source("bigquery://tweets.labelled", tmp_path, print)
    assert source.frame.height == 3
    context.__exit__.assert_called_once()
