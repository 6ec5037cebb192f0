"""Source URIs as they may be shown: in logs, Dagster metadata, error messages and the download
cache's index. A signed URL or `user:password@` carries a credential; the run's record keeps
whatever it is shown, so every place a URI is shown gets `redact(uri)` and only the code that
reads the source ever holds the real one."""

from __future__ import annotations

import re
from urllib.parse import unquote

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

_PARAMETER = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#?]+)=(?P<value>[^&;#]*)")


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
    The URI is not parsed strictly (a malformed one is shown too, in an error message): the
    authority is whatever follows `scheme://` up to the first `/`, so a password holding `?` or
    `#` is still hidden."""
    scheme, separator, rest = uri.partition("://")
    if not separator or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return uri
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        userinfo = authority.rpartition("@")[0]
        rest = f"{PLACEHOLDER}@{rest[len(userinfo) + 1 :]}"
    return f"{scheme}://{_redact_parameters(rest)}"


def _redact_parameters(text: str) -> str:
    def hide(match: re.Match[str]) -> str:
        if not is_secret_parameter(match["name"]):
            return match[0]
        return f"{match['lead']}{match['name']}={PLACEHOLDER}"

    return _PARAMETER.sub(hide, text)
