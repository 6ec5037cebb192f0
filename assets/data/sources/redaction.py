"""Source URIs as they may be shown: in logs, Dagster metadata, error messages and the download
cache's index. A signed URL or `user:password@` carries a credential; the run's record keeps
whatever it is shown, so every place a URI is shown gets `redact(uri)`, every message that may
quote one (a library's error text) gets `redact_message(message, uri)`, and only the code that
reads the source ever holds the real one.

Both work on the string as written, before any parsing: the URIs most likely to be shown are
the malformed ones, in the error that says they are malformed, and a parser's reading of a
malformed URI is not where its secret ends."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

PLACEHOLDER = "***"

# Parameter names (lowercase, without "-" and "_") that are credentials by themselves.
SECRET_NAMES = frozenset(
    {"sig", "key", "code", "pwd", "pass", "jwt", "session", "sessionid", "sid", "otp"}
)
# ... and parts of names that mark one: X-Goog-Signature, X-Amz-Credential,
# X-Amz-Security-Token, access_token, api_key, client_secret, AWSAccessKeyId, password, auth.
SECRET_MARKERS = (
    "signature",
    "credential",
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "accesskey",
    "privatekey",
    "auth",
)
# Sources named by what they are, never by where with whose credentials: a shipped dataset or
# a BigQuery table or query (whose SQL may well hold an '@' or '?x=y'), shown as written.
CREDENTIAL_FREE = ("embedded:", "bigquery:")
# Pieces of a secret shorter than this are not searched for in messages: a message with every
# "ab" hidden would say nothing, and so short a piece gives little away.
MIN_PIECE_CHARS = 4

# Where the authority of a URI starts, read as loosely as a person may type it: surrounding
# whitespace, any case, a scheme followed by any number of slashes (`https:/host`, `https:host`,
# `https:///host`), or no scheme at all (`//host`, `user:password@host`).
_START = re.compile(r"\s*(?:[A-Za-z][A-Za-z0-9+.-]+\s*:[\s/\\]*|//)")
# A parameter's value runs to the next '&' or '#': a ';' may separate parameters (it starts a
# name below) or sit unescaped in a signature, so a value is hidden across it.
_PARAMETER = re.compile(r"[?&;#](?P<name>[^=&;#?]+)=(?P<value>[^&#]*)")
# What separates the pieces of a secret that a library may quote on their own: the parts of
# `user:password`, or what follows a '/' that cut an unescaped password short.
_DELIMITERS = re.compile(r"[\s/\\?#@:;&=%]+")


def is_secret_parameter(name: str) -> bool:
    """Whether a query (or fragment) parameter of this name holds a credential: erring on the
    side of hiding, since a hidden harmless value costs a reader little and a shown secret is
    in the run's record for good."""
    normal = unquote(name).lower().replace("-", "").replace("_", "")
    return normal in SECRET_NAMES or any(marker in normal for marker in SECRET_MARKERS)


def redact(uri: str) -> str:
    """`uri` with its userinfo and its credential parameters replaced by `***`, the rest kept
    as written so that a reader still sees which host, file and options were read:
    `https://***@host/data.csv?X-Goog-Signature=***&X-Goog-Date=20240101T000000Z`.

    Local paths, `embedded:` and `bigquery:` URIs carry no credentials and come back unchanged.
    The userinfo is whatever lies between the scheme and the last '@', so a password holding
    '/', '?', '#', '@' or a space, typed unescaped, is hidden whole; a path or query value that
    holds an '@' hides what comes before it too, which costs a reader a little and never shows
    a password."""
    shown, last = [], 0
    for begin, end in _secret_spans(uri):
        shown += [uri[last:begin], PLACEHOLDER]
        last = end
    return "".join(shown) + uri[last:]


def redact_message(message: str, uri: str) -> str:
    """`message` with `uri` shown redacted and every secret of `uri` hidden wherever it appears,
    as written, percent-decoded or percent-encoded, whole or by the pieces between delimiters
    (`Port could not be cast to integer value as 'hun'` from a password `hun/ter2`): for text a
    library wrote about the URI, such as an http.client or urllib error quoting the request."""
    message = message.replace(uri, redact(uri))
    for secret in secrets_of(uri):
        message = message.replace(secret, PLACEHOLDER)
    return message


def secrets_of(uri: str) -> list[str]:
    """What `redact` hides in `uri`, in the forms a message may quote it, longest first."""
    found: set[str] = set()
    for begin, end in _secret_spans(uri):
        secret = uri[begin:end]
        for form in {secret, unquote(secret), quote(secret), quote(secret, safe="")}:
            found.add(form)
            found.update(_DELIMITERS.split(form))
    return sorted((s for s in found if len(s) >= MIN_PIECE_CHARS), key=len, reverse=True)


def _secret_spans(uri: str) -> list[tuple[int, int]]:
    """The (start, end) positions of the userinfo and credential values of `uri`, merged where
    they overlap (a signature holding an '@' reaches into the userinfo's span)."""
    start = _START.match(uri)
    if start is None or uri.lstrip().lower().startswith(CREDENTIAL_FREE):
        return []
    spans = []
    at = uri.rfind("@", start.end())
    if at >= 0:
        spans.append((start.end(), at))
    for lead in re.finditer(r"[?&;#]", uri[start.end() :]):
        match = _PARAMETER.match(uri, start.end() + lead.start())
        if match and is_secret_parameter(match["name"]):
            spans.append(match.span("value"))
    return _merged(spans)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged
