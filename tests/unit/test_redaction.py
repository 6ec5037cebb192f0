"""Credentials in a source URI are hidden wherever the URI is shown."""

import pytest

from assets.data.sources.redaction import redact


@pytest.mark.parametrize(
    "uri, shown",
    [
        (
            "https://user:pw@127.0.0.1:8443/data.csv?X-Goog-Signature=abc123secret",
            "https://***@127.0.0.1:8443/data.csv?X-Goog-Signature=***",
        ),
        (
            "https://bucket.s3.amazonaws.com/d.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIA%2F20240101&X-Amz-Security-Token=tok&X-Amz-Signature=f00",
            "https://bucket.s3.amazonaws.com/d.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=***&X-Amz-Security-Token=***&X-Amz-Signature=***",
        ),
        (
            "https://a.blob.core.windows.net/c/d.csv?sv=2022-11-02&se=2030-01-01&sig=s3cr%3D",
            "https://a.blob.core.windows.net/c/d.csv?sv=2022-11-02&se=2030-01-01&sig=***",
        ),
        (
            "https://h/d.csv?ACCESS_TOKEN=t&api-key=k&Key=k2&password=p&code=c&page=2",
            "https://h/d.csv?ACCESS_TOKEN=***&api-key=***&Key=***&password=***&code=***&page=2",
        ),
        ("https://ghp_tokenonly@h/d.csv", "https://***@h/d.csv"),
        ("https://u:p?a#ss@h/d.csv", "https://***@h/d.csv"),  # a password left unescaped
        ("https://h?token=abc", "https://h?token=***"),
        ("https://h/hate#sha256=" + "a" * 64, "https://h/hate#sha256=" + "a" * 64),
        ("https://h/d.csv", "https://h/d.csv"),
        ("/data/tweets.csv", "/data/tweets.csv"),
        ("gs://bucket/data/hate", "gs://bucket/data/hate"),
        ("embedded:tweeteval/hate", "embedded:tweeteval/hate"),
        ("bigquery:SELECT text, label FROM d.t", "bigquery:SELECT text, label FROM d.t"),
    ],
)
def test_redact_hides_credentials_and_keeps_the_rest(uri, shown):
    assert redact(uri) == shown
