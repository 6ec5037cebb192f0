"""https sources downloaded into a content-addressed cache, safely when the server is not ours.

What a download may do is bounded: https only (plain http only between addresses of this
machine), redirects only to https and only a few, a byte cap checked before and while the body
arrives, and an overall deadline besides the per-read timeout, which ends everything from
resolving the host to the body's last byte (a server trickling its headers included). The body
streams to a temporary file beside the blobs and is renamed to `blobs/<sha256>` once complete,
so memory holds one chunk and the cache never holds half a file under a hash name.

A URL may pin its content: `https://host/data.csv#sha256=<64 hex digits>`. A fragment is never
sent to the server, so the pin costs nothing there; a download that hashes differently is
refused, and a pinned blob already in the cache is used without asking the network.

The index (`downloads/index.json`) maps a hash of the full URL to the blob, its ETag and when
the server last confirmed it; the URL itself is stored redacted (`redaction.redact`), so a
signed URL's signature is not written to disk in plain text.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from assets.data.sources.formats import SourceError, limit
from assets.data.sources.redaction import redact, redact_message
from assets.progress import Log, Progress
from assets.settings import default
from textops_core.settings import variable

MAX_BYTES_ENV = variable("max_download_bytes")
DEADLINE_ENV = variable("download_deadline_s")
MAX_REDIRECTS = 5
READ_TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class SourceUrl:
    """A source URL split into what is requested, what is checked and what may be shown."""

    address: str  # the URL requested: no userinfo, no fragment
    userinfo: str | None  # `user:password` as written, sent as Basic credentials
    pin: str | None  # the expected sha256 of the content, from `#sha256=`
    loopback: bool  # the host is this machine: plain http is allowed

    @property
    def full(self) -> str:
        """The URL with its credentials, without the fragment: what identifies the content."""
        if not self.userinfo:
            return self.address
        scheme, rest = self.address.split("://", 1)
        return f"{scheme}://{self.userinfo}@{rest}"

    @property
    def shown(self) -> str:
        """Redacted: for logs, messages and the cache index."""
        return redact(self.full + (f"#sha256={self.pin}" if self.pin else ""))

    @property
    def key(self) -> str:
        """The cache index key: a hash of the full URL, which may hold a secret."""
        return hashlib.sha256(self.full.encode()).hexdigest()

    @property
    def authorization(self) -> str | None:
        if self.userinfo is None:
            return None
        user, _, password = self.userinfo.partition(":")
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        return "Basic " + base64.b64encode(credentials).decode()

    def child(self, name: str) -> SourceUrl:
        """The URL of file `name` in this folder URL, with the same credentials and query; a
        folder's pin covers its files together (see `transports.read_url`), not each one."""
        parts = urlsplit(self.address)
        address = urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))
        return replace(self, address=address, pin=None)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url(url: str) -> SourceUrl:
    """Checks `url` and splits it (see `SourceUrl`): https, or http to this machine; a fragment
    is nothing but `sha256=<hex>`."""
    shown = redact(url)
    parts = _split(url, shown)
    host = parts.hostname
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not host:
        raise SourceError(f"{shown}: not a valid URL; expected https://host/path")
    loopback = is_loopback(host)
    if scheme == "http" and not loopback:
        raise SourceError(
            f"{shown}: plain http is refused for a host other than this machine (anyone on the "
            "way could change the data); use https://"
        )
    pin = None
    if parts.fragment:
        match = PIN.fullmatch(parts.fragment)
        if not match:
            raise SourceError(
                f"{shown}: unsupported URL fragment; the only fragment textops reads is "
                "#sha256=<64 hex digits>, the expected sha256 of the content"
            )
        pin = match[1].lower()
    userinfo, _, netloc = parts.netloc.rpartition("@")
    return SourceUrl(
        address=urlunsplit((scheme, netloc, parts.path, parts.query, "")),
        userinfo=userinfo or None,
        pin=pin,
        loopback=loopback,
    )


def _split(url: str, shown: str) -> SplitResult:
    """`urlsplit`'s reading of `url`, once `url` is one that http.client would send as written;
    a refusal says what is wrong in words of its own, since the parser's and http.client's quote
    the URL, whose password may be cut short where redaction cannot tell it apart."""
    if unsafe := next((c for c in url if c.isspace() or not c.isprintable()), None):
        raise SourceError(
            f"{shown}: not a valid URL: it holds {unsafe!r} (character {url.index(unsafe) + 1}); "
            "percent-encode it (a space is %20) or remove it"
        )
    try:
        parts = urlsplit(url)
        _port = parts.port  # a malformed port raises here
    except ValueError:
        raise SourceError(
            f"{shown}: not a valid URL (its host or port cannot be read); a user name or password "
            "holding '/', '?', '#', '@' or ':' must be percent-encoded (%2F, %3F, %23, %40, %3A)"
        ) from None
    if not (parts.path + parts.query + parts.fragment).isascii():
        raise SourceError(
            f"{shown}: not a valid URL: its path or query holds a character outside ASCII; "
            "percent-encode it (as a browser's address bar does when the URL is copied)"
        )
    return parts


def max_download_bytes() -> int:
    return limit("max_download_bytes")


def download_deadline() -> float:
    """The monotonic time by which the downloads of one source read must have finished."""
    return time.monotonic() + limit("download_deadline_s")


def fetch(
    url: str | SourceUrl,
    cache: Path,
    log: Log,
    warn: Log | None = None,
    deadline: float | None = None,
) -> bytes:
    """The content of `url`, from the cache when the server says it is unchanged (ETag /
    Last-Modified) or the pinned content is there already; `warn` (default `log`) gets the
    messages a person should see, such as a stale copy used because the network failed.

    Raises FileNotFoundError on 404, SourceError on anything else that gives no usable content.
    The bytes returned are read back from the finished blob: the download itself never sits in
    memory.
    """
    with secrets_hidden(url.full if isinstance(url, SourceUrl) else url):
        source = url if isinstance(url, SourceUrl) else parse_url(url)
        return _Download(
            source,
            cache / "downloads",
            log,
            warn or log,
            deadline if deadline is not None else download_deadline(),
            max_download_bytes(),
        ).run()


@contextlib.contextmanager
def secrets_hidden(uri: str) -> Iterator[None]:
    """Whatever is raised inside, with no secret of `uri` in its message: an error whose message
    holds one (a library's, quoting the request) is raised again as a SourceError with that
    message redacted, its chain dropped; any other goes on as it was."""
    try:
        yield
    except Exception as error:
        message = str(error)
        shown = redact_message(message, uri)
        if shown == message:
            raise
        raise SourceError(shown) from None


@dataclass
class _Download:
    source: SourceUrl
    folder: Path
    log: Log
    warn: Log
    deadline: float
    max_bytes: int

    @property
    def blobs(self) -> Path:
        return self.folder / "blobs"

    def run(self, conditional: bool = True) -> bytes:
        source = self.source
        if source.pin and (pinned := self._verified_blob(source.pin)) is not None:
            self.log(f"{source.shown}: the pinned content (sha256 {source.pin[:12]}) is cached")
            return pinned
        # A pinned URL is never served from an unpinned cached copy: no revalidation, no
        # stale fallback.
        entry = None if source.pin else _read_index(self.folder).get(source.key)
        try:
            digest, headers = self._download(self._request(entry if conditional else None))
        except urllib.error.HTTPError as error:
            if error.code == 304 and entry and conditional:
                return self._unchanged(entry)
            if error.code == 404:
                raise FileNotFoundError(source.shown) from None
            if error.code >= 500:
                return self._stale(entry, f"HTTP {error.code} {error.reason}")
            raise SourceError(
                f"{source.shown}: HTTP {error.code} {error.reason}; check the URL and, for a "
                "signed URL, that it has not expired"
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if time.monotonic() >= self.deadline:  # the watchdog's doing, or a timeout at it
                self._past_deadline()
            reason = str(getattr(error, "reason", error)) or type(error).__name__
            # http.client and urllib quote the request in some of their errors
            return self._stale(entry, redact_message(reason, source.full))
        self._record(digest, headers.get("ETag"), headers.get("Last-Modified"))
        try:  # hashed on its way in: read back, not hashed again
            return (self.blobs / digest).read_bytes()
        except FileNotFoundError:
            message = f"{source.shown}: the downloaded blob {digest[:12]} vanished"
            raise SourceError(message) from None

    def _request(self, entry: dict | None) -> urllib.request.Request:
        """The GET of the source, conditional on the cached copy of `entry` if it is there."""
        source = self.source
        request = urllib.request.Request(source.address, headers={"User-Agent": "textops"})
        if source.authorization:
            # not copied onto redirects: _Redirects adds it back for the same origin only
            request.add_unredirected_header("Authorization", source.authorization)
        if entry and (self.blobs / entry["sha256"]).is_file():
            if entry.get("etag"):
                request.add_header("If-None-Match", entry["etag"])
            if entry.get("last_modified"):
                request.add_header("If-Modified-Since", entry["last_modified"])
        return request

    def _download(self, request: urllib.request.Request) -> tuple[str, Message]:
        """The hash of the body, streamed into a blob, and the response's headers; everything
        from resolving the host to the body's last byte ends by the deadline (`_Watchdog`)."""
        with _Watchdog(self.deadline) as watchdog:
            opener = urllib.request.build_opener(
                _Redirects(self.source), _HTTPHandler(watchdog), _HTTPSHandler(watchdog)
            )
            with opener.open(request, timeout=self._timeout()) as response:
                digest = self._stream_to_blob(response, watchdog)
                return digest, response.headers

    def _timeout(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._past_deadline()
        return min(READ_TIMEOUT_S, left)

    def _past_deadline(self) -> None:
        raise SourceError(
            f"{self.source.shown}: the download did not finish within the deadline; for a slow "
            f"link or a large source, set {DEADLINE_ENV} to more seconds (default "
            f"{default('download_deadline_s'):.0f})"
        )

    def _too_large(self, size: int, when: str) -> SourceError:
        return SourceError(
            f"{self.source.shown}: {when} {size:,} bytes, more than the download cap of "
            f"{self.max_bytes:,} bytes; set {MAX_BYTES_ENV} to a larger number of bytes to allow "
            "it"
        )

    def _stream_to_blob(self, response, watchdog: _Watchdog) -> str:
        """Writes the body to a temporary file in `blobs/`, hashing it on the way, and renames
        it to its hash; returns the hash. A body the watchdog cut short is not taken for the
        whole of one that announced no length."""
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else 0
        if total > self.max_bytes:
            raise self._too_large(total, "the server announces")
        self.blobs.mkdir(parents=True, exist_ok=True)
        progress = Progress(self.log, f"downloading {self.source.shown}", total / 1e6, "MB", 2.0)
        digest, done = hashlib.sha256(), 0
        fd, partial = tempfile.mkstemp(dir=self.blobs, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read1(CHUNK_BYTES):
                    done += len(chunk)
                    if done > self.max_bytes:
                        raise self._too_large(done, "the body passed")
                    if time.monotonic() > self.deadline:
                        self._past_deadline()
                    digest.update(chunk)
                    out.write(chunk)
                    progress.update(done / 1e6)
                out.flush()
                os.fsync(out.fileno())
            if watchdog.fired:
                self._past_deadline()
            if total and done != total:
                raise ConnectionError(f"the connection closed after {done:,} of {total:,} bytes")
            progress.finish()
            hexdigest = digest.hexdigest()
            if self.source.pin and hexdigest != self.source.pin:
                raise SourceError(
                    f"{self.source.shown}: the content has sha256 {hexdigest}, not the pinned "
                    f"{self.source.pin}; the file changed at the source or on the way: check it, "
                    "then update the #sha256= pin"
                )
            os.replace(partial, self.blobs / hexdigest)
            return hexdigest
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    def _verified_blob(self, digest: str) -> bytes | None:
        """The cached blob `digest` if it still hashes to its name; a damaged one is removed."""
        blob = self.blobs / digest
        try:
            data = blob.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() == digest:
            return data
        blob.unlink(missing_ok=True)
        self.warn(f"{self.source.shown}: the cached copy {digest[:12]} was damaged; removed it")
        return None

    def _unchanged(self, entry: dict) -> bytes:
        data = self._verified_blob(entry["sha256"])
        if data is None:
            return self.run(conditional=False)  # download it again, without asking "changed?"
        self.log(f"{self.source.shown}: unchanged (cached {entry['sha256'][:12]})")
        self._record(entry["sha256"], entry.get("etag"), entry.get("last_modified"))
        return data

    def _stale(self, entry: dict | None, reason: str) -> bytes:
        data = self._verified_blob(entry["sha256"]) if entry else None
        if data is None:
            raise SourceError(
                f"{self.source.shown}: cannot download ({reason}). If this machine is offline, "
                "set TEXTOPS_SOURCE to a local copy (a TweetEval folder or a CSV / Parquet / "
                "JSONL file)"
            )
        self.warn(
            f"{self.source.shown}: cannot download ({reason}); using the cached copy "
            f"(sha256 {entry['sha256'][:12]}) last confirmed by the server at "
            f"{entry.get('fetched_at', 'an unknown time')}: it may be stale"
        )
        return data

    def _record(self, digest: str, etag: str | None, last_modified: str | None) -> None:
        index = _read_index(self.folder)
        index[self.source.key] = {
            "url": self.source.shown,
            "sha256": digest,
            "etag": etag,
            "last_modified": last_modified,
            "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        fd, partial = tempfile.mkstemp(dir=self.folder, prefix=".index-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(index, out, indent=2)
            os.replace(partial, self.folder / "index.json")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)


def _read_index(folder: Path) -> dict[str, dict]:
    """The cache index; entries keyed by anything but a URL hash (an older layout keyed by the
    URL, which may hold a secret in plain text) are dropped, and so forgotten on the next write."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {
        key: entry
        for key, entry in index.items()
        if re.fullmatch(r"[0-9a-f]{64}", key) and isinstance(entry, dict) and "sha256" in entry
    }


class _Watchdog:
    """Shuts down the sockets of a download's connections when its deadline passes, whatever
    they are waiting for: a TLS handshake, headers a server trickles a line at a time, a body,
    or an answer from a server that accepted and says nothing. The per-read timeout alone never
    ends those: it starts again with every byte. Name resolution, which has no socket yet, runs
    on a thread that is waited for until the deadline (`resolve`)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)

    def resolve(self, host: str, port: int) -> list[tuple]:
        """`socket.getaddrinfo` of `host`, given up at the deadline (the lookup, which cannot be
        interrupted, finishes on its daemon thread and is forgotten)."""
        answer: dict[str, object] = {}

        def lookup() -> None:
            try:
                answer["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as error:
                answer["error"] = error

        thread = threading.Thread(target=lookup, name="textops-resolve", daemon=True)
        thread.start()
        thread.join(max(0.0, self.deadline - time.monotonic()))
        if thread.is_alive():
            raise TimeoutError(f"resolving {host} did not finish by the deadline")
        if "error" in answer:
            raise answer["error"]  # type: ignore[misc]
        return answer["addresses"]  # type: ignore[return-value]

    def connect(self, address: tuple[str, int], timeout: float, source_address=None):
        """`socket.create_connection` (what http.client calls), each socket watched from before
        it connects, each attempt ending by the deadline."""
        error: OSError = OSError(f"{address[0]} has no address")
        for family, kind, protocol, _, sockaddr in self.resolve(*address):
            sock = socket.socket(family, kind, protocol)
            self.watch(sock)
            try:
                sock.settimeout(min(timeout, max(0.01, self.deadline - time.monotonic())))
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as failed:
                error = failed
                sock.close()
        raise error

    def connection(self, connection_class: type[http.client.HTTPConnection]):
        """A factory of `connection_class` connections that connect through `connect`."""

        def make(*args, **kwargs) -> http.client.HTTPConnection:
            connection = connection_class(*args, **kwargs)
            connection._create_connection = self.connect  # http.client's own hook
            return connection

        return make


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def http_open(self, req):
        return self.do_open(self.watchdog.connection(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog) -> None:
        super().__init__()
        self.watchdog = watchdog

    def https_open(self, req):
        connection = self.watchdog.connection(http.client.HTTPSConnection)
        return self.do_open(connection, req, context=self._context)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most MAX_REDIRECTS redirects, only to https (to http only from http on this
    machine to this machine), and sends credentials again only to the same origin."""

    max_repeats = max_redirections = MAX_REDIRECTS + 1  # the count below speaks first

    def __init__(self, source: SourceUrl) -> None:
        self.source, self.hops = source, 0

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.hops += 1
        shown, target = self.source.shown, urlsplit(newurl)
        if self.hops > MAX_REDIRECTS:
            raise SourceError(
                f"{shown}: more than {MAX_REDIRECTS} redirects (the last to {redact(newurl)}); "
                "set the source to the final URL"
            )
        from_loopback_http = self.source.loopback and self.source.address.startswith("http:")
        to_loopback_http = (
            from_loopback_http and target.scheme == "http" and is_loopback(target.hostname)
        )
        if target.scheme != "https" and not to_loopback_http:
            raise SourceError(
                f"{shown}: redirected to {redact(newurl)}, which is not https; textops follows "
                "redirects only to https (plain http only between addresses of this machine)"
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and self.source.authorization
            and _origin(newurl) == _origin(self.source.address)
        ):
            new.add_unredirected_header("Authorization", self.source.authorization)
        return new


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, parts.hostname, parts.port or default
