"""s3fs and a HEAD reply without Content-Length (issue 16 item 10).

Some proxies and S3 look-alikes answer ``HEAD`` without ``Content-Length``; s3fs then
raises a bare ``KeyError('ContentLength')`` from ``info`` (and from everything built on
it), which used to fail a whole audit after all its work. Here a real HTTP reverse proxy
(stdlib ``http.server`` + ``http.client``, threaded, on loopback) sits in front of moto's
real S3 server and strips ``Content-Length`` from HEAD responses only; every other reply
passes through byte for byte. The Store and the dataset readers are run through it.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

#: Hop-by-hop headers a proxy must not forward (RFC 9110 section 7.6.1).
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


class _StripHeadLength(BaseHTTPRequestHandler):
    """Forwards every request to ``upstream``; drops Content-Length from HEAD replies."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    heads_stripped = 0  # HEAD replies sent without Content-Length
    forwarded = 0  # all requests

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _forward(self) -> None:
        _StripHeadLength.forwarded += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            # the original Host header is kept: SigV4 signs it
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in HOP or k.lower() == "content-length":
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            _StripHeadLength.heads_stripped += 1  # the fault: no Content-Length at all
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture(scope="module")
def proxy(s3_server) -> Iterator[str]:
    """The proxy's endpoint URL (in front of the session's moto server)."""
    up = urlsplit(s3_server)
    handler = type("Handler", (_StripHeadLength,), {"upstream": (up.hostname, up.port)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def bucket(s3_server, proxy):
    """A fresh bucket on moto; yields (name, storage options through the proxy)."""
    import boto3

    name = f"h-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_server, aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=name)
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": proxy}}
    return name, opts


def _fresh_fs(opts: dict) -> object:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **opts)


def test_the_proxy_really_strips_content_length_from_head_only(bucket):
    """The fault is real: through the proxy a HEAD has no Content-Length and s3fs's ``info``
    raises KeyError('ContentLength'); GET replies keep their bytes."""
    name, opts = bucket
    fs = _fresh_fs(opts)
    fs.pipe(f"{name}/x.bin", b"0123456789")
    before = _StripHeadLength.heads_stripped
    with pytest.raises(KeyError, match="ContentLength"):
        _fresh_fs(opts).info(f"{name}/x.bin")
    assert _StripHeadLength.heads_stripped > before
    assert _fresh_fs(opts).cat_file(f"{name}/x.bin", start=0, end=10) == b"0123456789"  # GET


def test_store_operations_work_without_content_length(bucket):
    """Every Store operation through the proxy: exists (present, absent, a prefix), info
    (the size from the listing), read_bytes, open + read, ls, find, write_bytes, rm,
    publish_dir + is_published + list_published (the marker's sizes and hashes)."""
    import hashlib
    import json

    from otaudit.data.storage import SUCCESS, Store

    name, opts = bucket
    store = Store(f"s3://{name}/root", opts)
    payload = bytes(range(256)) * 40
    store.write_bytes(payload, "a", "blob.bin")
    fresh = Store(f"s3://{name}/root", {**opts, "skip_instance_cache": True})  # no dircache
    assert fresh.exists("a", "blob.bin") is True
    assert fresh.exists("a", "missing.bin") is False
    assert fresh.exists("a") is True
    info = Store(f"s3://{name}/root", {**opts, "skip_instance_cache": True}).info("a", "blob.bin")
    assert info["size"] == len(payload) and info.get("type", "file") == "file"
    assert fresh.read_bytes("a", "blob.bin") == payload
    with Store(f"s3://{name}/root", {**opts, "skip_instance_cache": True}).open(
        "a", "blob.bin"
    ) as f:
        assert f.read() == payload
    assert fresh.ls("a") == ["blob.bin"]
    assert {k: v["size"] for k, v in fresh.find().items()} == {"a/blob.bin": len(payload)}
    uri = fresh.publish_dir({"x.parquet": b"xyz", "sub/y.json": b"{}"}, "audit", "run=1")
    assert uri.endswith("/root/audit/run=1")
    assert fresh.is_published("audit", "run=1") and fresh.list_published("audit") == ["run=1"]
    marker = json.loads(fresh.read_bytes("audit", "run=1", SUCCESS))
    assert marker["files"]["x.parquet"] == {"size": 3, "sha256": hashlib.sha256(b"xyz").hexdigest()}
    assert fresh.read_bytes("audit", "run=1", "sub", "y.json") == b"{}"
    fresh.rm("a", "blob.bin")
    assert fresh.exists("a", "blob.bin") is False


@pytest.mark.parametrize("fmt", ["parquet", "parquet-dir", "npy", "npz", "csv"])
def test_datasets_read_through_the_proxy_equal_the_direct_read(bucket, s3_server, fmt):
    """The reader layer (preflight probe, inspect, read) through the proxy: the same
    arrays, rows and fingerprint as reading moto directly (the listing's ETag and size
    stand in for the HEAD's)."""
    import io

    from otaudit.data.manifest import DatasetSpec
    from otaudit.data.parquet import write_dataset_parquet
    from otaudit.data.readers import inspect_dataset, probe_dataset, read_dataset
    from otaudit.data.storage import Store

    name, opts = bucket
    direct = {**opts, "client_kwargs": {"endpoint_url": s3_server}}
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    root = f"s3://{name}/data"
    store = Store(root, direct)
    if fmt == "parquet":
        uri = write_dataset_parquet(root, "d", X, y, storage_options=direct)
        kw = {"features": "features", "label": "label"}
    elif fmt == "parquet-dir":
        for i in (0, 1):
            write_dataset_parquet(
                f"{root}/dir", f"part-{i}", X[i * 20 : (i + 1) * 20], y[i * 20 : (i + 1) * 20],
                storage_options=direct,
            )  # fmt: skip
        uri, kw = f"{root}/dir", {"features": "features", "label": "label", "format": "parquet"}
    elif fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, X)
        store.write_bytes(buf.getvalue(), "d.npy")
        uri, kw, y = f"{root}/d.npy", {}, None
    elif fmt == "npz":
        buf = io.BytesIO()
        np.savez(buf, features=X, label=y)
        store.write_bytes(buf.getvalue(), "d.npz")
        uri, kw = f"{root}/d.npz", {"features": "features", "label": "label"}
    else:
        text = "a,b,c,d,e,label\n" + "\n".join(
            ",".join(f"{v:.9g}" for v in row) + f",{lab}" for row, lab in zip(X, y, strict=True)
        )
        store.write_bytes(text.encode(), "d.csv")
        uri, kw = f"{root}/d.csv", {"features": ["a", "b", "c", "d", "e"], "label": "label"}
    spec = DatasetSpec(name="headless", uri=uri, **kw)
    via = {**opts, "skip_instance_cache": True}  # nothing cached: every HEAD is stripped
    before = (_StripHeadLength.heads_stripped, _StripHeadLength.forwarded)
    assert probe_dataset(spec, via) in (5, None)
    info = inspect_dataset(spec, {**via})
    assert info.n_rows == 40
    Xp, yp = read_dataset(spec, {**via})
    assert _StripHeadLength.forwarded > before[1], "the proxy was not in the path"
    if fmt != "parquet-dir":  # (a directory is read from listings, which carry sizes)
        assert _StripHeadLength.heads_stripped > before[0], "no HEAD was stripped"
    Xd, yd = read_dataset(spec, direct)
    np.testing.assert_array_equal(np.asarray(Xp), np.asarray(Xd))
    np.testing.assert_allclose(np.asarray(Xp), X, rtol=1e-6)
    if y is not None:
        np.testing.assert_array_equal(yp, yd)
        np.testing.assert_array_equal(yp, y)
    assert (
        info.fingerprint
        == inspect_dataset(spec, {**direct, "skip_instance_cache": True}).fingerprint
    )
