"""URL sources against real servers on 127.0.0.1: what a download may follow, how much it may
read, what a pin refuses, when the cache stands in, and that credentials stay out of the run's
record."""

import base64
import contextlib
import hashlib
import http.server
import ipaddress
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from assets.data.sources.downloads import fetch
from assets.data.sources.formats import SourceError
from assets.data.sources.transports import DEFAULT_SOURCE, embedded_folder, read_source
from tests.conftest import tiny_rows

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


class Served:
    """A server on 127.0.0.1 (http, or https with `tls`) answering each path as the test sets
    in `routes`, and recording every request's path and headers."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append((self.path, dict(self.headers)))
                answer = served.routes.get(self.path.split("?")[0])
                if answer is None:
                    self.send_error(404)
                else:
                    answer(self)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a client that stopped reading
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{self.scheme}://{at}127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def body(data: bytes, headers: dict[str, str] | None = None) -> Answer:
    def answer(handler) -> None:
        handler.send_response(200)
        for name, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def redirect(location: str) -> Answer:
    def answer(handler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


@pytest.fixture
def served():
    servers: list[Served] = []

    def start(tls: ssl.SSLContext | None = None) -> Served:
        servers.append(Served(tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def tls(tmp_path, monkeypatch) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1, trusted by this
    process's default https context (SSL_CERT_FILE) for the test."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "textops test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


CSV = b"text,label\nhello,0\nbye,1\n"


def quiet(message: str) -> None:
    pass


def test_plain_http_is_refused_unless_the_host_is_this_machine(tmp_path):
    with pytest.raises(SourceError, match="plain http is refused .* use https://"):
        fetch("http://data.example.org/d.csv", tmp_path, quiet)
    with pytest.raises(SourceError, match="the only fragment textops reads is #sha256="):
        fetch("https://data.example.org/d.csv#latest", tmp_path, quiet)


def test_redirect_to_plain_http_elsewhere_is_refused_before_it_is_followed(served, tmp_path):
    server = served()
    server.routes["/d.csv"] = redirect("http://data.example.org/d.csv")
    with pytest.raises(
        SourceError, match="redirected to http://data.example.org/d.csv, which is not https"
    ):
        fetch(server.url("/d.csv"), tmp_path, quiet)
    assert not (tmp_path / "downloads" / "index.json").exists()


def test_redirects_are_followed_to_https_only_and_only_a_few(served, tls, tmp_path):
    secure = served(tls)
    plain = served()
    secure.routes["/d.csv"] = body(CSV)
    plain.routes["/d.csv"] = redirect(secure.url("/d.csv"))
    assert fetch(plain.url("/d.csv"), tmp_path, quiet) == CSV

    # from https, even to this machine, plain http is a downgrade
    secure.routes["/down.csv"] = redirect(plain.url("/d.csv"))
    with pytest.raises(SourceError, match="which is not https"):
        fetch(secure.url("/down.csv"), tmp_path, quiet)

    secure.routes["/loop.csv"] = redirect(secure.url("/loop.csv"))
    with pytest.raises(SourceError, match="more than 5 redirects .* set the source to the final"):
        fetch(secure.url("/loop.csv"), tmp_path, quiet)


def test_credentials_go_to_the_same_origin_only(served, tmp_path):
    origin, elsewhere = served(), served()
    origin.routes["/old.csv"] = redirect("/d.csv")
    origin.routes["/d.csv"] = redirect(elsewhere.url("/d.csv"))
    elsewhere.routes["/d.csv"] = body(CSV)
    assert fetch(origin.url("/old.csv", "reader:pa%3Ass"), tmp_path, quiet) == CSV
    basic = "Basic " + base64.b64encode(b"reader:pa:ss").decode()
    assert [headers.get("Authorization") for _, headers in origin.requests] == [basic, basic]
    assert [headers.get("Authorization") for _, headers in elsewhere.requests] == [None]


def test_a_body_over_the_cap_is_refused_up_front_and_while_streaming(served, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_MAX_DOWNLOAD_BYTES", "100000")
    server = served()
    server.routes["/announced.csv"] = body(b"x" * 200_000)

    def endless(handler) -> None:  # no Content-Length: a body that does not say how big it is
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(4096):
                handler.wfile.write(b"y" * 65536)
        except OSError:
            pass  # the client hung up, as it should

    server.routes["/endless.csv"] = endless
    with pytest.raises(SourceError) as announced:
        fetch(server.url("/announced.csv"), tmp_path, quiet)
    assert "announces 200,000 bytes, more than the download cap of 100,000 bytes" in str(
        announced.value
    )
    assert "set TEXTOPS_MAX_DOWNLOAD_BYTES to a larger number" in str(announced.value)
    with pytest.raises(SourceError, match="the body passed [0-9,]+ bytes, more than the download"):
        fetch(server.url("/endless.csv"), tmp_path, quiet)
    assert list((tmp_path / "downloads" / "blobs").iterdir()) == []  # no partial file left

    monkeypatch.setenv("TEXTOPS_MAX_DOWNLOAD_BYTES", "lots")
    with pytest.raises(SourceError, match="TEXTOPS_MAX_DOWNLOAD_BYTES='lots': expected a posi"):
        fetch(server.url("/announced.csv"), tmp_path, quiet)


def test_a_download_must_finish_by_the_deadline(served, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", "0.5")
    server = served()

    def trickle(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        try:
            for _ in range(10):
                handler.wfile.write(b"z" * 10)
                handler.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    server.routes["/slow.csv"] = trickle
    with pytest.raises(SourceError, match="did not finish within the deadline"):
        fetch(server.url("/slow.csv"), tmp_path, quiet)


def test_a_truncated_body_is_not_cached(served, tmp_path):
    server = served()

    def truncated(handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"text,label\n")

    server.routes["/d.csv"] = truncated
    with pytest.raises(SourceError, match=r"connection closed after 11 of 1,000 bytes"):
        fetch(server.url("/d.csv"), tmp_path, quiet)
    assert list((tmp_path / "downloads" / "blobs").iterdir()) == []


def test_a_pinned_file_is_checked_and_then_read_from_the_cache(served, tmp_path):
    server = served()
    server.routes["/d.csv"] = body(CSV)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(SourceError) as refused:
        fetch(server.url(f"/d.csv#sha256={wrong}"), tmp_path, quiet)
    assert f"has sha256 {hashlib.sha256(CSV).hexdigest()}, not the pinned {wrong}" in str(
        refused.value
    )
    assert list((tmp_path / "downloads" / "blobs").iterdir()) == []

    pinned = server.url(f"/d.csv#sha256={hashlib.sha256(CSV).hexdigest().upper()}")
    assert read_source(pinned, tmp_path, quiet).frame["text"].to_list() == ["hello", "bye"]
    server.stop()  # the pinned content is known: no need to ask anyone
    warnings = []
    assert fetch(pinned, tmp_path, quiet, warnings.append) == CSV
    assert warnings == []


def test_a_folder_pin_is_the_hash_of_its_sha256sums(served, tmp_path):
    """The SHA256SUMS textops ships with a dataset pins a download of its upstream folder."""
    root = tmp_path / "served"
    shutil.copytree(embedded_folder(DEFAULT_SOURCE), root / "hate")
    server = served()
    for file in (root / "hate").iterdir():
        server.routes[f"/hate/{file.name}"] = body(file.read_bytes())
    pin = hashlib.sha256((root / "hate" / "SHA256SUMS").read_bytes()).hexdigest()
    source = read_source(server.url(f"/hate#sha256={pin}"), tmp_path / "cache", quiet)
    assert source.frame.height == 12970

    changed_labels = b"1\n" * 2970
    server.routes["/hate/test_labels.txt"] = body(changed_labels)
    with pytest.raises(SourceError) as changed:
        read_source(server.url(f"/hate#sha256={pin}"), tmp_path / "cache", quiet)
    message = str(changed.value)
    assert "the folder's SHA256SUMS listing has sha256" in message and f"pinned {pin}" in message
    assert f"{hashlib.sha256(changed_labels).hexdigest()}  test_labels.txt" in message


def etagged(data: bytes, etag: str = '"v1"') -> Answer:
    """A file the server says is unchanged (304) when asked with its ETag."""

    def answer(handler) -> None:
        if handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.end_headers()
        else:
            body(data, {"ETag": etag})(handler)

    return answer


def test_not_modified_uses_the_cache_only_when_the_blob_is_intact(served, tmp_path):
    server = served()
    server.routes["/d.csv"] = etagged(CSV)
    url = server.url("/d.csv")
    assert fetch(url, tmp_path, quiet) == CSV
    logs = []
    assert fetch(url, tmp_path, logs.append) == CSV
    assert any(
        line.endswith(f"unchanged (cached {hashlib.sha256(CSV).hexdigest()[:12]})") for line in logs
    )

    blob = tmp_path / "downloads" / "blobs" / hashlib.sha256(CSV).hexdigest()
    blob.write_bytes(b"text,label\ntampered,0\n")
    server.requests.clear()
    warnings = []
    assert fetch(url, tmp_path, quiet, warnings.append) == CSV
    assert [headers.get("If-None-Match") for _, headers in server.requests] == ['"v1"', None]
    assert any("the cached copy" in w and "was damaged; removed it" in w for w in warnings)
    assert blob.read_bytes() == CSV


@pytest.mark.parametrize("outage", ["server down", "HTTP 503"])
def test_an_outage_falls_back_to_the_cached_copy_with_a_warning(served, tmp_path, outage):
    server = served()
    server.routes["/d.csv"] = body(CSV)
    url = server.url("/d.csv")
    assert fetch(url, tmp_path, quiet) == CSV
    (entry,) = json.loads((tmp_path / "downloads" / "index.json").read_text()).values()
    if outage == "server down":
        server.stop()
    else:
        server.routes["/d.csv"] = lambda handler: handler.send_error(503)
    logs, warnings = [], []
    assert fetch(url, tmp_path, logs.append, warnings.append) == CSV
    (warning,) = warnings
    assert warning.startswith(f"{url}: cannot download (")
    assert (
        f"using the cached copy (sha256 {entry['sha256'][:12]}) last confirmed by the server at "
        f"{entry['fetched_at']}: it may be stale"
    ) in warning
    datetime.fromisoformat(entry["fetched_at"])  # a time a reader can compare with now
    assert not any("cached copy" in line for line in logs)


def test_the_index_holds_no_url_in_plain_text_and_forgets_the_old_layout(served, tmp_path):
    server = served()
    server.routes["/d.csv"] = body(CSV)
    index_path = tmp_path / "downloads" / "index.json"
    index_path.parent.mkdir(parents=True)
    old = server.url("/old.csv?token=oldsecret")
    index_path.write_text(json.dumps({old: {"sha256": "0" * 64, "etag": None}}))
    fetch(server.url("/d.csv?sig=newsecret", "u:pw"), tmp_path, quiet)
    text = index_path.read_text()
    assert "oldsecret" not in text and "newsecret" not in text and "u:pw" not in text
    (entry,) = json.loads(text).values()
    assert entry["url"] == server.url("/d.csv?sig=***", "***")


SECRET = "abc123secret"
PASSWORD = "hunter2pw"


def labelled_csv() -> bytes:
    rows = []
    for split, (size, offset) in {"train": (40, 0), "test": (12, 40), "val": (12, 52)}.items():
        rows += [(text, label, split) for text, label in tiny_rows(size, offset)]
    frame = pl.DataFrame(rows, schema=["text", "label", "split"], orient="row")
    return frame.write_csv().encode()


def test_a_signed_url_leaves_no_secret_in_the_run(served, store, tmp_path, monkeypatch, capfd):
    from assets.data.raw import raw_texts
    from orchestration.definitions import pipeline_resources

    server = served()
    server.routes["/data.csv"] = body(labelled_csv())
    url = server.url(f"/data.csv?X-Goog-Signature={SECRET}", f"reader:{PASSWORD}")
    monkeypatch.setenv("TEXTOPS_SOURCE", url)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_texts], resources=pipeline_resources(store), instance=instance)
    assert result.success
    # the secret was used: the server got it
    ((path, headers),) = server.requests
    assert SECRET in path and headers["Authorization"].startswith("Basic ")
    shown = server.url("/data.csv?X-Goog-Signature=***", "***")
    metadata = result.asset_materializations_for_node("raw_texts")[0].metadata
    assert metadata["source_uri"].value == shown

    monkeypatch.setenv("TEXTOPS_SOURCE", url.replace("/data.csv", "/missing.csv"))
    failed = dg.materialize(
        [raw_texts], resources=pipeline_resources(store), instance=instance, raise_on_error=False
    )
    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error.cause.message.rstrip().endswith(
        f"{shown.replace('/data.csv', '/missing.csv')}: not found (HTTP 404); check the URL"
    )

    recorded = []
    for run in (result, failed):
        recorded.append(repr(instance.get_run_by_id(run.run_id)))
        recorded += [repr(event) for event in instance.all_logs(run.run_id)]
    recorded.append((tmp_path / "cache" / "downloads" / "index.json").read_text())
    output = capfd.readouterr()
    recorded += [output.out, output.err]
    everything = "\n".join(recorded)
    assert "reading " + shown in everything  # the logs name the source, redacted
    assert SECRET not in everything and PASSWORD not in everything


def test_a_source_with_surrounding_whitespace_is_refused_and_leaves_no_secret(
    store, monkeypatch, capfd
):
    from assets.data.raw import raw_texts
    from orchestration.definitions import pipeline_resources

    monkeypatch.setenv("TEXTOPS_SOURCE", f" https://alice:{PASSWORD}@127.0.0.1:9/d.csv")
    instance = dg.DagsterInstance.ephemeral()
    failed = dg.materialize(
        [raw_texts], resources=pipeline_resources(store), instance=instance, raise_on_error=False
    )
    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    message = failure.step_failure_data.error.cause.message
    assert "TEXTOPS_SOURCE=' https://***@127.0.0.1:9/d.csv': starts or ends with whitespace" in (
        message
    )
    recorded = [repr(event) for event in instance.all_logs(failed.run_id)]
    output = capfd.readouterr()
    assert PASSWORD not in "\n".join([*recorded, output.out, output.err])


def test_a_library_error_quoting_the_request_is_redacted(tmp_path, monkeypatch):
    """http.client's InvalidURL quotes the request line (path and query, signature and all);
    what reaches the message, and the warning of a stale copy, is redacted."""
    import http.client
    import urllib.request

    def refuse(opener, request, *args, **kwargs):
        raise http.client.InvalidURL(f"URL can't contain control characters. {request.selector!r}")

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", refuse)
    url = f"https://reader:{PASSWORD}@127.0.0.1:9/d.csv?X-Goog-Signature={SECRET}"
    with pytest.raises(SourceError) as refused:
        fetch(url, tmp_path, quiet)
    quoted = "(URL can't contain control characters. '/d.csv?X-Goog-Signature=***'"
    assert f"cannot download {quoted}" in str(refused.value)
    assert SECRET not in str(refused.value) and PASSWORD not in str(refused.value)


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 that accepts connections and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in accepted:
        connection.close()


def trickled_headers(handler) -> None:
    """A status line, then one header line a second, twenty of them."""
    with contextlib.suppress(OSError):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for number in range(20):
            handler.wfile.flush()
            time.sleep(1)
            handler.wfile.write(f"X-Slow-{number}: y\r\n".encode())
        handler.wfile.write(b"Content-Length: 0\r\n\r\n")


def refused_by_the_deadline(url: str, tmp_path, seconds: float) -> str:
    """The message of the SourceError `fetch(url)` raises, checked to come within a second of
    the deadline."""
    started = time.monotonic()
    with pytest.raises(SourceError) as refused:
        fetch(url, tmp_path, quiet)
    assert time.monotonic() - started < seconds + 1
    message = str(refused.value)
    assert "did not finish within the deadline" in message
    assert "set TEXTOPS_DOWNLOAD_DEADLINE_S to more seconds" in message
    return message


def test_the_deadline_cuts_a_server_that_trickles_its_headers(served, tmp_path, monkeypatch):
    """Before, the download ended when the server gave up, 20 s after the start."""
    monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", "2")
    server = served()
    server.routes["/d.csv"] = trickled_headers
    message = refused_by_the_deadline(server.url("/d.csv", f"u:{PASSWORD}"), tmp_path, 2)
    assert message.startswith(server.url("/d.csv", "***") + ": ")
    assert PASSWORD not in message
    assert list((tmp_path / "downloads" / "blobs").iterdir()) == []  # nothing half-read cached


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_deadline_cuts_a_server_that_accepts_and_never_answers(
    silent_port, tmp_path, monkeypatch, scheme
):
    monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", "1.5")
    refused_by_the_deadline(f"{scheme}://127.0.0.1:{silent_port}/d.csv", tmp_path, 1.5)


def test_the_deadline_covers_resolving_the_host(tmp_path, monkeypatch):
    release = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def stuck(host, *args, **kwargs):
        if host == "stuck.example":
            release.wait(30)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    monkeypatch.setenv("TEXTOPS_DOWNLOAD_DEADLINE_S", "1")
    try:
        refused_by_the_deadline("https://stuck.example/d.csv", tmp_path, 1)
    finally:
        release.set()
