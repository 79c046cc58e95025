"""An S3 server that lies, over real HTTP to the real botocore client: a ranged read
answered with the whole object, a listing that sends the same page marker for ever. Each is
refused by name, never taken as data (README, "How it keeps data safe": the threat model)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest

from emberkeep.errors import StorageError
from emberkeep.storage import open_storage

OBJECT = bytes(range(256)) * 64  # 16 KiB


class _Liar(BaseHTTPRequestHandler):
    """GET of an object: all of it with 200, whatever Range asked. A listing: truncated,
    with the same continuation token every time."""

    listings = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if "list-type=2" in self.path:
            type(self).listings += 1
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?>'
                b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                b"<Name>b</Name><Prefix>p/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>"
                b"<IsTruncated>true</IsTruncated><NextContinuationToken>again</NextContinuationToken>"
                b"<Contents><Key>p/data/aa/x</Key><Size>1</Size>"
                b"<LastModified>2026-12-04T00:00:00.000Z</LastModified></Contents>"
                b"</ListBucketResult>"
            )
            self._reply(200, body, "application/xml")
            return
        self._reply(200, OBJECT, "application/octet-stream")

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def liar(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        yield f"s3://b/p/?{urlencode({'endpoint': endpoint, 'region': 'us-east-1'})}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_ranged_read_answered_with_the_whole_object_is_refused(liar: str) -> None:
    st = open_storage(liar, name="liar")
    with pytest.raises(StorageError, match=r"target liar: .*ranged read of data/aa/x.*Range"):
        st.get("data/aa/x", 100, 50)
    with pytest.raises(StorageError, match="ignored the Range header"):
        st.get("data/aa/x", 100)  # to the end: a 200 is the whole object, not its tail
    assert st.get("data/aa/x") == OBJECT  # a whole read is what it is


def test_a_listing_that_repeats_its_page_is_refused(liar: str) -> None:
    st = open_storage(liar, name="liar")
    _Liar.listings = 0
    with pytest.raises(StorageError, match=r"target liar: .*repeats a page"):
        list(st.list("data/"))
    assert _Liar.listings == 2
