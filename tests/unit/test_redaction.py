"""Credentials in a source URI are hidden wherever the URI is shown."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.data.sources.downloads import parse_url
from assets.data.sources.formats import SourceError
from assets.data.sources.redaction import redact, redact_message
from assets.data.sources.transports import read_source


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
        # malformed: redacted too
        (" https://alice:hunter2@h/d.csv", " https://***@h/d.csv"),
        ("https://alice:hunter2@h/d.csv\n", "https://***@h/d.csv\n"),
        ("https:/alice:hunter2@h/d.csv", "https:/***@h/d.csv"),
        ("https:alice:hunter2@h/d.csv", "https:***@h/d.csv"),
        ("HTTPS://alice:hunter2@h/d.csv", "HTTPS://***@h/d.csv"),
        ("https://alice:hun/ter2@h/d.csv", "https://***@h/d.csv"),
        ("https://alice:hun@ter2@h/d.csv", "https://***@h/d.csv"),
        ("https://alice:hun ter2@h/d a.csv", "https://***@h/d a.csv"),
        ("//alice:hunter2@h/d.csv", "//***@h/d.csv"),
        ("https://h/d.csv?sig=ab@cd&page=2", "https://***&page=2"),
        ("https://h/d a.csv?X-Goog-Signature=SECRETSIG", "https://h/d a.csv?X-Goog-Signature=***"),
    ],
)
def test_redact_hides_credentials_and_keeps_the_rest(uri, shown):
    assert redact(uri) == shown


def test_a_message_quoting_a_secret_is_redacted_whole_and_by_pieces():
    uri = "https://alice:hun/ter2@h/d.csv?X-Goog-Signature=SECRET%2FSIG"
    message = (
        f"{uri}: Port could not be cast to integer value as 'hun'; '/ter2@h/d.csv'; "
        "'?X-Goog-Signature=SECRET/SIG'"
    )
    shown = redact_message(message, uri)
    assert shown.startswith("https://***@h/d.csv?X-Goog-Signature=***: ")
    for secret in ("hun/ter2", "ter2", "SECRET%2FSIG", "SECRET/SIG"):
        assert secret not in shown
    assert redact_message("no URI here", uri) == "no URI here"


# --- generated URIs: no secret, however the URI is typed, is ever shown --------------------

MARKER = "S3CRET"
# what a person may type unescaped into a password or a signature, and what may break a parser
HOSTILE = "/?#@:%=&; \t+!$'()*,[]~ée\u200b"
SCHEME_FORMS = ["https://", "HTTPS://", "https:/", "https:", "https:///", "http://", " https://"]


def _secrets(alphabet: str) -> st.SearchStrategy[str]:
    piece = st.text(alphabet=alphabet + "abcXYZ019", max_size=6)
    return st.builds(lambda a, b: f"{a}{MARKER}{b}", piece, piece)


@st.composite
def secret_uris(draw) -> tuple[str, list[str]]:
    """A URI with a password or a signature (or both) holding MARKER, typed well or badly."""
    scheme = draw(st.sampled_from(SCHEME_FORMS))
    password = draw(st.none() | _secrets(HOSTILE))
    signature = draw(st.none() | _secrets(HOSTILE.replace("&", "").replace("#", "")))
    user = draw(st.sampled_from(["", "alice", "reader"]))
    userinfo = f"{user}:{password}@" if password is not None else ""
    host = draw(st.sampled_from(["127.0.0.1:9", "localhost:9", "127.0.0.1"]))
    path = draw(st.sampled_from(["/d.csv", "/d a.csv", "/hate", "", "/x@y/d.csv"]))
    name = draw(st.sampled_from(["X-Goog-Signature", "sig", "access_token", "X-Amz-Credential"]))
    query = f"?page=1&{name}={signature}&b=2" if signature is not None else ""
    tail = draw(st.sampled_from(["", " ", "\n", "#sha256=" + "a" * 64]))
    secrets = [s for s in (password, signature) if s is not None] or [MARKER]
    return f"{scheme}{userinfo}{host}{path}{query}{tail}", secrets


def shows_no_secret(text: str, secrets: list[str]) -> bool:
    return MARKER not in text and not any(secret in text for secret in secrets)


@settings(max_examples=300, deadline=None)
@given(secret_uris())
def test_redact_never_shows_a_generated_secret(case):
    uri, secrets = case
    assert shows_no_secret(redact(uri), secrets)
    assert shows_no_secret(redact_message(f"{uri} ({uri.strip()})", uri), secrets)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=secret_uris())
def test_no_source_error_shows_a_generated_secret(case, tmp_path, monkeypatch):
    """parse_url, and the whole read (against a closed port on this machine), fail with a
    SourceError whose message holds no secret of the URI."""
    monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", "5")
    uri, secrets = case
    with pytest.raises(SourceError) as parsed:
        parse_url(uri)
        raise SourceError("parsed")  # a URL that parses is read below
    assert shows_no_secret(str(parsed.value), secrets)
    with pytest.raises(SourceError) as read:
        read_source(uri, tmp_path / "cache", lambda message: None)
    assert shows_no_secret(str(read.value), secrets)
