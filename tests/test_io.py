"""Dataset readers on real local dirs, memory:// and a real S3 API (moto server):
round trips for every format, row-group sharding, fingerprints, and every bad input."""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otaudit.data.manifest import DatasetSpec
from otaudit.data.readers import inspect_dataset, read_dataset, read_shard, write_dataset_parquet
from otaudit.data.storage import Store
from otaudit.errors import InputError, StorageError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(103, 5))
Y_INT = RNG.integers(0, 3, size=103)
Y_STR = np.array(["cat", "dog", "emu"], dtype=object)[Y_INT]


@pytest.fixture(params=["local", "memory", "s3"])
def where(request, tmp_path):
    """(store, storage_options) on each backend."""
    if request.param == "local":
        return Store(str(tmp_path / "data")), {}
    if request.param == "memory":
        return Store(f"memory://io-{os.getpid()}-{time.monotonic_ns()}"), {}
    bucket, opts = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/data", opts), opts


def _parquet_bytes(table: pa.Table, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _csv_bytes(X, y) -> bytes:
    cols = [f"f{j}" for j in range(X.shape[1])]
    lines = [",".join(cols + ["label"])]
    lines += [
        ",".join([repr(float(v)) for v in row] + [str(lab)]) for row, lab in zip(X, y, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def _check_round_trip(spec, opts, X_ref, y_ref, n_shards=None):
    info = inspect_dataset(spec, opts, shard_rows=40)
    assert info.n_rows == len(X_ref)
    if n_shards is not None:
        assert info.n_shards == n_shards
    Xr, yr = read_dataset(spec, opts, shard_rows=40)
    np.testing.assert_allclose(Xr, X_ref, rtol=0, atol=0)
    if y_ref is None:
        assert yr is None
    else:
        assert list(yr) == list(y_ref)
    return info


def test_parquet_file_fixed_size_list(where):
    store, opts = where
    uri = write_dataset_parquet(
        store.uri, "vendor_a", X, Y_STR, storage_options=opts, row_group_size=25
    )
    spec = DatasetSpec(name="vendor_a", uri=uri, features="features", label="label")
    info = _check_round_trip(spec, opts, X, Y_STR, n_shards=5)
    assert info.format == "parquet" and info.dim == 5 and info.shard_sizes == (25, 25, 25, 25, 3)
    assert info.columns == ["features", "label"]


def test_parquet_directory_numeric_columns_int_labels(where):
    store, opts = where
    cols = {f"c{j}": X[:, j] for j in range(5)} | {"y": Y_INT}
    full = pa.table(cols)
    store.write_bytes(_parquet_bytes(full.slice(0, 60), row_group_size=30), "dir", "part-0.parquet")
    store.write_bytes(_parquet_bytes(full.slice(60), row_group_size=30), "dir", "part-1.parquet")
    store.write_bytes(b"", "dir", "_SUCCESS")  # markers / hidden files are skipped
    spec = DatasetSpec(
        name="d", uri=store.path("dir"), features=[f"c{j}" for j in range(5)], label="y"
    )
    info = _check_round_trip(spec, opts, X, Y_INT, n_shards=4)
    assert info.shard_sizes == (30, 30, 30, 13)
    # shards concatenated == whole, shard by shard
    parts = [read_shard(spec, opts, k) for k in range(info.n_shards)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), X)
    assert parts[0][1].dtype == np.int64


def test_parquet_variable_list_column_and_unlabelled(where):
    store, opts = where
    t = pa.table(
        {"emb": pa.array([list(r) for r in X.astype(np.float32)], type=pa.list_(pa.float32()))}
    )
    store.write_bytes(_parquet_bytes(t, row_group_size=50), "l.parquet")
    spec = DatasetSpec(name="l", uri=store.path("l.parquet"), features="emb")
    Xr, yr = read_dataset(spec, opts)
    assert Xr.dtype == np.float32 and yr is None
    np.testing.assert_array_equal(Xr, X.astype(np.float32))


def test_npz_npy_csv_round_trips(where):
    store, opts = where
    store.write_bytes(_npz_bytes(features=X, label=Y_INT), "a.npz")
    store.write_bytes(_npy_bytes(X), "b.npy")
    store.write_bytes(_csv_bytes(X, Y_STR), "c.csv")
    spec = DatasetSpec(name="a", uri=store.path("a.npz"), label="label")
    _check_round_trip(spec, opts, X, Y_INT, n_shards=3)
    spec = DatasetSpec(name="b", uri=store.path("b.npy"))
    info = _check_round_trip(spec, opts, X, None, n_shards=3)
    assert info.shard_sizes == (40, 40, 23)
    spec = DatasetSpec(
        name="c", uri=store.path("c.csv"), features=[f"f{j}" for j in range(5)], label="label"
    )
    _check_round_trip(spec, opts, X, Y_STR, n_shards=3)


def test_npy_shard_reads_only_its_rows(tmp_path):
    a = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    np.save(tmp_path / "a.npy", a)
    spec = DatasetSpec(name="a", uri=str(tmp_path / "a.npy"))
    Xs, _ = read_shard(spec, None, 2, shard_rows=20)
    np.testing.assert_array_equal(Xs, a[40:50])
    assert Xs.dtype == np.float32


def test_text_column_for_sentence_embedder(tmp_path):
    t = pa.table({"text": ["a b", "c", "d e f"], "y": [1, 2, 1]})
    pq.write_table(t, tmp_path / "t.parquet")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    spec = DatasetSpec(
        name="t",
        uri=str(tmp_path / "t.parquet"),
        features="text",
        label="y",
        embedder={"kind": "sentence-transformers", "path": str(model_dir)},
    )
    info = inspect_dataset(spec)
    assert info.text and info.dim is None
    Xr, yr = read_dataset(spec)
    assert Xr == ["a b", "c", "d e f"] and list(yr) == [1, 2, 1]


def test_fingerprint_stable_and_content_addressed(where):
    store, opts = where
    uri = write_dataset_parquet(store.uri, "fp", X, Y_INT, storage_options=opts)
    spec = DatasetSpec(name="fp", uri=uri, label="label")
    f1 = inspect_dataset(spec, opts).fingerprint
    f2 = inspect_dataset(spec, opts).fingerprint
    assert f1 == f2 and len(f1) == 64
    X2 = X.copy()
    X2[7, 2] += 1.0
    time.sleep(0.01)  # distinct mtime on coarse local clocks
    write_dataset_parquet(store.uri, "fp", X2, Y_INT, storage_options=opts)
    assert inspect_dataset(spec, opts).fingerprint != f1
    # the fingerprint also depends on which columns are read
    spec_nolabel = DatasetSpec(name="fp", uri=uri)
    assert (
        inspect_dataset(spec_nolabel, opts).fingerprint != inspect_dataset(spec, opts).fingerprint
    )
    # .npy (no Parquet statistics): content change detected too
    store.write_bytes(_npy_bytes(X), "f.npy")
    s2 = DatasetSpec(name="f", uri=store.path("f.npy"))
    g1 = inspect_dataset(s2, opts).fingerprint
    assert inspect_dataset(s2, opts).fingerprint == g1
    time.sleep(0.01)
    store.write_bytes(_npy_bytes(X2), "f.npy")
    assert inspect_dataset(s2, opts).fingerprint != g1


# --- bad inputs: every message names the dataset, the field and the fix ---------------


def _expect(exc_type, spec, opts, field, *needles, shard=None):
    with pytest.raises(exc_type) as ei:
        if shard is None:
            read_dataset(spec, opts)
        else:
            read_shard(spec, opts, shard)
    msg = str(ei.value)
    assert f"dataset {spec.name!r}" in msg, msg
    assert f"field {field!r}" in msg, msg
    assert "fix:" in msg and "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_file(where):
    store, opts = where
    for name in ("nope.parquet", "nope.npz", "nope.csv", "nope.npy", "nodir"):
        spec = DatasetSpec(
            name="gone", uri=store.path(name), format="auto" if name != "nodir" else "parquet"
        )
        _expect(StorageError, spec, opts, "uri", "not found")


def test_corrupt_files(where):
    store, opts = where
    store.write_bytes(b"this is not parquet at all", "bad.parquet")
    spec = DatasetSpec(name="corrupt", uri=store.path("bad.parquet"))
    _expect(InputError, spec, opts, "uri", "corrupt or not Parquet")
    store.write_bytes(b"PK\x03\x04garbage", "bad.npz")
    _expect(
        InputError,
        DatasetSpec(name="corrupt", uri=store.path("bad.npz")),
        opts,
        "uri",
        "corrupt or not .npz",
    )
    store.write_bytes(b"garbage", "bad.npy")
    _expect(
        InputError,
        DatasetSpec(name="corrupt", uri=store.path("bad.npy")),
        opts,
        "uri",
        "not a .npy file",
    )


def test_unknown_columns(tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [0, 1]}), tmp_path / "x.parquet")
    spec = DatasetSpec(name="v", uri=str(tmp_path / "x.parquet"), features="feat", label="b")
    msg = _expect(InputError, spec, None, "features", "unknown column 'feat'", "available: a, b")
    spec = DatasetSpec(name="v", uri=str(tmp_path / "x.parquet"), features="a", label="lbl")
    _expect(InputError, spec, None, "label", "unknown column 'lbl'", "available: a, b")
    np.savez(tmp_path / "x.npz", X=np.zeros((3, 2)))
    spec = DatasetSpec(name="v", uri=str(tmp_path / "x.npz"))
    _expect(InputError, spec, None, "features", "unknown column 'features'", "available: X")
    assert msg


def test_non_numeric_features(tmp_path):
    pq.write_table(pa.table({"s": ["a", "b"], "y": [0, 1]}), tmp_path / "s.parquet")
    spec = DatasetSpec(name="txt", uri=str(tmp_path / "s.parquet"), features="s", label="y")
    _expect(InputError, spec, None, "features", "not numeric", "sentence-transformers")


def test_ragged_list_column(tmp_path):
    t = pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]])})
    pq.write_table(t, tmp_path / "r.parquet")
    spec = DatasetSpec(name="rag", uri=str(tmp_path / "r.parquet"), features="v")
    _expect(InputError, spec, None, "features", "ragged", "row 2")


def test_nan_inf_features(tmp_path):
    Xb = X.copy()
    Xb[17, 1] = np.nan
    Xb[50, 0] = np.inf
    Xb[51, 3] = -np.inf
    write_dataset_parquet(str(tmp_path), "nan", Xb, Y_INT)
    spec = DatasetSpec(name="nan", uri=str(tmp_path / "nan.parquet"), label="label")
    _expect(
        InputError,
        spec,
        None,
        "features",
        "3 rows contain NaN or inf",
        "first at row 17",
        "drop or impute",
    )
    np.save(tmp_path / "nan.npy", Xb)
    spec = DatasetSpec(name="nan2", uri=str(tmp_path / "nan.npy"))
    _expect(InputError, spec, None, "features", "first at row 17", shard=0)


def test_empty_dataset(tmp_path):
    pq.write_table(
        pa.table({"features": pa.array([], type=pa.list_(pa.float64(), 2))}), tmp_path / "e.parquet"
    )
    spec = DatasetSpec(name="empty", uri=str(tmp_path / "e.parquet"))
    _expect(InputError, spec, None, "uri", "empty (0 rows")
    os.mkdir(tmp_path / "emptydir")
    spec = DatasetSpec(name="empty", uri=str(tmp_path / "emptydir"))
    _expect(InputError, spec, None, "uri", "no Parquet files")


def test_null_labels_and_npy_label(tmp_path):
    t = pa.table({"x": [1.0, 2.0, 3.0], "y": ["a", None, "b"]})
    pq.write_table(t, tmp_path / "nl.parquet")
    spec = DatasetSpec(name="nl", uri=str(tmp_path / "nl.parquet"), features="x", label="y")
    _expect(InputError, spec, None, "label", "no label", "row 1")
    np.save(tmp_path / "z.npy", X)
    spec = DatasetSpec(name="z", uri=str(tmp_path / "z.npy"), label="y")
    _expect(InputError, spec, None, "label", ".npy files hold features only")


def test_unreachable_storage_names_dataset():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opts = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
        "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}},
    }
    spec = DatasetSpec(name="far", uri="s3://bucket/far.parquet")
    t0 = time.perf_counter()
    _expect(StorageError, spec, opts, "uri", "s3://bucket/far.parquet")
    assert time.perf_counter() - t0 < 20


def test_write_dataset_parquet_digits_vendors(tmp_path):
    """What `otaudit demo` does: sklearn digits split into vendors, written and read back."""
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    uris = {}
    for k, name in enumerate(["vendor_a", "vendor_b"]):
        sl = slice(k * 600, (k + 1) * 600)
        uris[name] = write_dataset_parquet(
            str(tmp_path / "store"), name, Xd[sl].astype(np.float32), yd[sl], row_group_size=256
        )
    assert sorted(os.listdir(tmp_path / "store")) == ["vendor_a.parquet", "vendor_b.parquet"]
    spec = DatasetSpec(name="vendor_b", uri=uris["vendor_b"], features="features", label="label")
    info = inspect_dataset(spec)
    assert (info.n_rows, info.n_shards, info.dim) == (600, 3, 64)
    Xr, yr = read_dataset(spec)
    np.testing.assert_array_equal(Xr, Xd[600:1200].astype(np.float32))
    np.testing.assert_array_equal(yr, yd[600:1200])
    with pytest.raises(InputError, match="dataset 'bad', field 'features'.*fix:"):
        write_dataset_parquet(str(tmp_path), "bad", np.zeros(3))
