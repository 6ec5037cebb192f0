"""The default source ships with textops: the first run needs no network, and the shipped copy
is the upstream content (same checksums, same data version as a download of it)."""

import hashlib
import http.server
import shutil
import socket
import threading
import urllib.request
from functools import partial

import pytest

from assets.data.raw import content_version
from assets.data.sources.formats import SourceError
from assets.data.sources.transports import DEFAULT_SOURCE, embedded_folder, read_source

# The data version of TweetEval hate (all three splits, as upstream publishes them).
TWEETEVAL_HATE_VERSION = "e5374748e1a4dbef3b82af2f535e277dac07a3b3ef62fa6a7a6ab3465cb2b93f"


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt fails, as on a machine without a network."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:9/", timeout=1)


def test_default_source_reads_the_shipped_copy_without_a_network(no_network, tmp_path):
    logs = []
    source = read_source(DEFAULT_SOURCE, tmp_path / "cache", logs.append)
    assert source.label_names == ["not-hate", "hate"]
    counts = dict(source.frame.group_by("source_split").len().iter_rows())
    assert counts == {"train": 9000, "validation": 1000, "test": 2970}
    assert content_version(source.frame, source.label_names) == TWEETEVAL_HATE_VERSION
    assert "7 files verified against SHA256SUMS" in logs[0]


def test_shipped_files_match_their_checksums_and_the_shared_upstream_copy(shared_tweeteval):
    folder = embedded_folder(DEFAULT_SOURCE)
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        checksum, name = line.split()
        assert hashlib.sha256((shared_tweeteval / "hate" / name).read_bytes()).hexdigest() == (
            checksum
        ), name
    assert "cardiffnlp/tweeteval" in (folder / "SOURCE.md").read_text()


def test_a_download_of_the_same_files_has_the_same_data_version(tmp_path):
    served = tmp_path / "served" / "hate"
    shutil.copytree(embedded_folder(DEFAULT_SOURCE), served)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hate"
        downloaded = read_source(url, tmp_path / "cache", lambda m: None)
    finally:
        server.shutdown()
    assert content_version(downloaded.frame, downloaded.label_names) == TWEETEVAL_HATE_VERSION


def test_a_damaged_shipped_copy_is_refused(tmp_path, monkeypatch):
    from assets.data.sources import transports

    copy = tmp_path / "embedded" / "tweeteval" / "hate"
    shutil.copytree(embedded_folder(DEFAULT_SOURCE), copy)
    (copy / "test_labels.txt").write_text("1\n" * 2970)
    monkeypatch.setattr(transports, "embedded_folder", lambda uri: copy)
    with pytest.raises(SourceError, match="test_labels.txt does not match its checksum"):
        read_source(DEFAULT_SOURCE, tmp_path, lambda m: None)


def test_an_unknown_embedded_dataset_names_the_shipped_ones(tmp_path):
    with pytest.raises(SourceError, match="no such embedded dataset; shipped: tweeteval/hate"):
        read_source("embedded:tweeteval/none", tmp_path, lambda m: None)
