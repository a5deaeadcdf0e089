"""The content-addressed cache on a real local dir, memory:// and S3 (moto server)."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest

from otaudit.data.cache import Cache
from otaudit.data.storage import Store
from otaudit.errors import InputError


@pytest.fixture(params=["local", "memory", "s3"])
def cache(request, tmp_path):
    if request.param == "local":
        return Cache(Store(str(tmp_path / "out")))
    if request.param == "memory":
        return Cache(Store(f"memory://cache-{os.getpid()}-{time.monotonic_ns()}"))
    bucket, opts = request.getfixturevalue("s3_bucket")
    return Cache(Store(f"s3://{bucket}/out", opts))


def test_keys_are_content_addressed(cache):
    k = cache.key("embeddings", "fp1", "identity-v1-abc")
    assert len(k) == 64 and k == cache.key("embeddings", "fp1", "identity-v1-abc")
    assert k != cache.key("embeddings", "fp2", "identity-v1-abc")
    assert k != cache.key("stats", "fp1", "identity-v1-abc")
    assert cache.key("e", "ab", "c") != cache.key("e", "a", "bc")  # no concatenation clash


def test_miss_put_hit(cache):
    k = cache.key("embeddings", "fp", "emb")
    assert cache.get_arrays("embeddings", k) is None
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array(["cat", "dog", "cat", "emu"], dtype=object)
    uri = cache.put_arrays("embeddings", k, {"X": X, "y": y, "n": np.int64(4)})
    assert uri.endswith(f"_cache/embeddings/{k}.npz")
    assert cache.store.ls("_cache", "embeddings") == [f"{k}.npz"]
    got = cache.get_arrays("embeddings", k)
    np.testing.assert_array_equal(got["X"], X)
    assert got["X"].dtype == np.float32
    assert got["y"].dtype == object and list(got["y"]) == list(y)
    assert int(got["n"]) == 4
    kj = cache.key("meta", "fp")
    assert cache.get_json("meta", kj) is None
    cache.put_json("meta", kj, {"n_rows": 4, "classes": ["a", "b"]})
    assert cache.get_json("meta", kj) == {"n_rows": 4, "classes": ["a", "b"]}


def test_corrupt_entries_are_misses_and_overwritten(cache, caplog):
    k = cache.key("embeddings", "fp", "corrupt")
    cache.root.write_bytes(b"PK\x03\x04 truncated", "embeddings", f"{k}.npz")
    with caplog.at_level(logging.WARNING, logger="otaudit.data.cache"):
        assert cache.get_arrays("embeddings", k) is None
    assert "corrupt" in caplog.text
    cache.put_arrays("embeddings", k, {"X": np.ones((2, 2))})
    np.testing.assert_array_equal(cache.get_arrays("embeddings", k)["X"], np.ones((2, 2)))
    cache.root.write_bytes(b"{not json", "meta", f"{k}.json")
    assert cache.get_json("meta", k) is None


def test_bad_kind_or_key(cache):
    with pytest.raises(InputError, match="fix:"):
        cache.get_arrays("../x", "ab" * 16)
    with pytest.raises(InputError, match="fix:"):
        cache.get_arrays("embeddings", "../../etc")
    with pytest.raises(InputError, match="Python objects"):
        cache.put_arrays("e", cache.key("e", "x"), {"o": np.array([object()], dtype=object)})
