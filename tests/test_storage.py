"""Store over real backends: local dirs (tmp_path), memory://, and a real S3 HTTP API
(moto's server on loopback).  Atomic writes, publish/_SUCCESS, confinement, errors."""

from __future__ import annotations

import os
import pickle
import socket
import stat
import time

import pytest

from otaudit.data.storage import SUCCESS, Store, check_reachable
from otaudit.errors import InputError, StorageError
from tests import emulators


@pytest.fixture(scope="module")
def azurite_options():
    """azurite (Azure Blob emulator) on loopback; skips with the install command if absent."""
    with emulators.azurite() as opts:
        yield opts


@pytest.fixture(scope="module")
def gcs_options():
    """fake-gcs-server on loopback; skips with the install command if absent."""
    with emulators.fake_gcs() as opts:
        yield opts


@pytest.fixture(params=["local", "memory", "s3", "az", "gs"])
def store(request, tmp_path):
    """One Store per backend, each on a fresh prefix (az: azurite, gs: fake-gcs-server)."""
    if request.param == "local":
        return Store(str(tmp_path / "out"))
    if request.param == "memory":
        return Store(f"memory://otaudit-test-{os.getpid()}-{time.monotonic_ns()}")
    if request.param in ("az", "gs"):
        opts = request.getfixturevalue(
            "azurite_options" if request.param == "az" else "gcs_options"
        )
        container = emulators.new_container(request.param, opts)
        return Store(f"{request.param}://{container}/audits", opts)
    bucket, opts = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/audits", opts)


def test_round_trip_ls_exists_rm(store):
    store.write_bytes(b"hello", "a", "b.txt")
    store.write_bytes([b"chunk1-", b"chunk2"], "a/c.txt")
    assert store.read_bytes("a", "b.txt") == b"hello"
    assert store.read_bytes("a", "c.txt") == b"chunk1-chunk2"
    assert store.ls("a") == ["b.txt", "c.txt"]
    assert store.exists("a/b.txt") and not store.exists("a/zz.txt")
    assert store.ls("nothing-here") == []
    with store.open("a", "b.txt") as f:
        assert f.read() == b"hello"
    store.write_bytes(b"v2", "a", "b.txt")  # overwrite is atomic too
    assert store.read_bytes("a/b.txt") == b"v2"
    sub = store.child("a")
    assert sub.read_bytes("c.txt") == b"chunk1-chunk2"
    assert sub.path("c.txt") == store.path("a", "c.txt")
    store.rm("a", "b.txt")
    assert store.ls("a") == ["c.txt"]
    store.rm("a", recursive=True)
    assert not store.exists("a", "c.txt")


def test_find_isdir_refresh_are_all_readers_need(store):
    """Readers list and stat through Store (never ``store.fs``): recursive ``find`` with paths
    relative to the prefix (temporary keys left out), ``isdir``, ``refresh``."""
    store.write_bytes(b"1", "d", "a.parquet")
    store.write_bytes(b"22", "d", "sub", "b.parquet")
    assert store.isdir("d") and not store.isdir("d", "a.parquet") and not store.isdir("nope")
    store.refresh("d")
    found = store.child("d").find()
    assert sorted(found) == ["a.parquet", "sub/b.parquet"]
    assert found["sub/b.parquet"]["size"] == 2
    with store.open("d", "c.parquet", mode="wb") as f:  # in flight: not listed
        f.write(b"x")
        assert sorted(store.child("d").find()) == ["a.parquet", "sub/b.parquet"]
    assert sorted(store.find("d")) == ["a.parquet", "c.parquet", "sub/b.parquet"]
    assert store.child("d") == store.child("d") and hash(store.child("d")) == hash(store.child("d"))


def test_store_uri_forms(tmp_path):
    assert Store(str(tmp_path)).uri == str(tmp_path)
    assert Store(f"file://{tmp_path}").uri == str(tmp_path)
    assert Store("memory://x/y").path("z") == "memory://x/y/z"


@pytest.mark.parametrize(
    "bad",
    ["..", "../x", "a/../../b", "/etc/passwd", "a\\b", "s3://other/bucket", "~/x", "C:/x", "."],
)
def test_confinement(bad, tmp_path):
    s = Store(str(tmp_path))
    with pytest.raises(InputError, match="fix:"):
        s.write_bytes(b"x", bad)
    with pytest.raises(InputError):
        s.child(bad)
    assert os.listdir(tmp_path) == []


class _Boom(RuntimeError):
    pass


def _failing_chunks():
    yield b"partial data " * 1000
    raise _Boom("writer died mid-way")


def test_atomic_write_leaves_nothing_on_failure(store):
    with pytest.raises(_Boom):
        store.write_bytes(_failing_chunks(), "run=1", "pairs.parquet")
    assert not store.exists("run=1", "pairs.parquet")
    assert store.ls("run=1") == []  # no partial file, no visible temp key
    # an existing object keeps its old content when an overwrite fails
    store.write_bytes(b"old", "k")
    with pytest.raises(_Boom):
        store.write_bytes(_failing_chunks(), "k")
    assert store.read_bytes("k") == b"old"


def test_atomic_open_wb(store):
    with store.open("w.bin", mode="wb") as f:
        f.write(b"abc")
        assert not store.exists("w.bin")  # invisible until closed
    assert store.read_bytes("w.bin") == b"abc"
    with pytest.raises(_Boom), store.open("w2.bin", mode="wb") as f:
        f.write(b"abc")
        raise _Boom()
    assert not store.exists("w2.bin")


def test_publish_dir(store):
    files = {"pairs.parquet": b"P" * 100, "summary.md": b"# hi", "img/heatmap.png": b"\x89PNG"}
    uri = store.publish_dir(files, "audit", "run=1")
    assert uri == store.path("audit", "run=1")
    assert store.is_published("audit", "run=1")
    assert store.read_bytes("audit", "run=1", "img", "heatmap.png") == b"\x89PNG"
    assert sorted(store.ls("audit", "run=1")) == [SUCCESS, "img", "pairs.parquet", "summary.md"]
    assert store.ls("audit") == ["run=1"]  # staging prefix removed
    with pytest.raises(StorageError, match="already published"):
        store.publish_dir(files, "audit", "run=1")
    # an unpublished prefix (e.g. a crashed writer) is ignored by readers
    store.write_bytes(b"half", "audit", "run=2", "pairs.parquet")
    assert store.list_published("audit") == ["run=1"]


def test_publish_dir_failure_leaves_no_success(store):
    class Bad(bytes):
        pass

    files = {"a.txt": b"ok", "b.txt": Bad(b"ok")}
    # the second file fails while staging (bytes() of a non-bytes object raises)
    files["b.txt"] = object()  # type: ignore[assignment]
    with pytest.raises(TypeError):
        store.publish_dir(files, "audit", "run=9")
    assert not store.is_published("audit", "run=9")
    assert not store.exists("audit", "run=9", "a.txt")
    assert store.ls("audit") == []
    with pytest.raises(InputError, match="reserved"):
        store.publish_dir({SUCCESS: b""}, "audit", "run=8")


def test_local_permissions_not_world_writable(tmp_path):
    s = Store(str(tmp_path / "perm"))
    s.write_bytes(b"x", "d", "f.bin")
    s.publish_dir({"r.txt": b"1"}, "rep")
    for path in [
        tmp_path / "perm" / "d" / "f.bin",
        tmp_path / "perm" / "rep" / "r.txt",
        tmp_path / "perm" / "rep" / SUCCESS,
        tmp_path / "perm" / "d",
    ]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert not mode & stat.S_IWOTH, f"{path} is world-writable ({oct(mode)})"


def test_missing_file_is_storage_error(store):
    with pytest.raises(StorageError, match="not found; fix:") as ei:
        store.read_bytes("missing", "file.parquet")
    assert "missing/file.parquet" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_store_pickles(store):
    store.write_bytes(b"p", "pickled")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri
    assert clone.read_bytes("pickled") == b"p"


def test_secrets_not_in_repr(s3_bucket):
    bucket, opts = s3_bucket
    s = Store(f"s3://{bucket}/x", {**opts, "secret": "cnry-0b7e4d2a91c6f358"})
    assert "cnry-0b7e4d2a91c6f358" not in repr(s)


def test_check_reachable_ok(s3_bucket, tmp_path):
    bucket, opts = s3_bucket
    check_reachable(Store(f"s3://{bucket}/x", opts))
    check_reachable(Store(str(tmp_path / "new")))
    check_reachable(Store("memory://anything"))
    with pytest.raises(StorageError, match="does not exist; fix:"):
        check_reachable(Store(f"s3://no-such-bucket-{bucket}/x", opts))


def test_unreachable_endpoint_fails_fast():
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
    }
    t0 = time.perf_counter()
    with pytest.raises(StorageError) as ei:
        check_reachable(Store("s3://bucket/prefix", opts))
    elapsed = time.perf_counter() - t0
    msg = str(ei.value)
    assert "s3://bucket/prefix" in msg and "unreachable" in msg and "endpoint_url" in msg
    assert "fix:" in msg and "\n" not in msg
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_bad_storage_option_is_storage_error(s3_bucket):
    bucket, opts = s3_bucket
    with pytest.raises(StorageError, match="storage_options"):
        check_reachable(Store(f"s3://{bucket}/x", {**opts, "no_such_option": 1}))


def test_unreachable_endpoint_default_options_bounded():
    """Without any timeout options the probe still fails within seconds (bounded retries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
    }
    t0 = time.perf_counter()
    with pytest.raises(StorageError, match="unreachable.*fix: check storage_options"):
        check_reachable(Store("s3://bucket/prefix", opts))
    assert time.perf_counter() - t0 < 15


def test_check_reachable_local_not_a_directory(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError, match="is not a directory; fix:"):
        check_reachable(Store(str(tmp_path / "file" / "out")))


@pytest.mark.parametrize(
    ("uri", "package", "extra"),
    [
        ("s3://b/p", "s3fs", "s3"),
        ("az://container/p", "adlfs", "azure"),
        ("abfs://container/p", "adlfs", "azure"),
        ("gs://bucket/p", "gcsfs", "gcs"),
    ],
)
def test_missing_backend_names_its_extra(monkeypatch, uri, package, extra):
    """Without the fsspec backend installed (its import made to fail, and fsspec's registry
    of already imported classes emptied for the scheme), the one-line error names the
    right extra: `otaudit[s3]` was advised for every scheme before."""
    import importlib
    import sys

    registry = importlib.import_module("fsspec.registry")._registry  # imported classes

    scheme = uri.split("://")[0]
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError
    for proto in (scheme, "gcs", "gs", "az", "abfs", "abfss", "s3", "s3a"):
        monkeypatch.delitem(registry, proto, raising=False)
    with pytest.raises(StorageError) as e:
        Store(uri, {})
    msg = str(e.value)
    assert "\n" not in msg and "ImportError" in msg
    assert f"pip install 'otaudit[{extra}]' ({package} is the {scheme}:// backend)" in msg
    assert (extra == "s3") or "otaudit[s3]" not in msg


def test_backend_errors_that_are_not_oserrors_become_storage_errors():
    """gcsfs's HttpError and azure's HttpResponseError are not OSErrors; matched by module."""
    from otaudit.data.storage import storage_errors

    HttpError = pytest.importorskip("gcsfs.retry").HttpError
    from azure.core.exceptions import HttpResponseError

    assert not issubclass(HttpError, OSError) and not issubclass(HttpResponseError, OSError)
    with pytest.raises(StorageError, match=r"storage 'gs://b/k' write failed: HttpError: "):
        with storage_errors("gs://b/k", "write", "gs"):
            raise HttpError({"code": 503, "message": "backend unavailable"})
    with pytest.raises(StorageError, match=r"RuntimeError: Failed to upload block"):
        with storage_errors("az://c/k", "write", "az"):  # adlfs wraps azure's error
            try:
                raise HttpResponseError("OutOfRangeInput")
            except HttpResponseError as e:
                raise RuntimeError("Failed to upload block") from e
    with pytest.raises(ZeroDivisionError):  # a bug is not a storage error
        with storage_errors("gs://b/k", "write", "gs"):
            raise ZeroDivisionError
