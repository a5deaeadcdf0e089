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
    assert "rejected" in caplog.text and len(caplog.records) == 1  # one warning line
    assert not cache.exists("embeddings", k)  # deleted, so it is recomputed
    cache.put_arrays("embeddings", k, {"X": np.ones((2, 2))})
    np.testing.assert_array_equal(cache.get_arrays("embeddings", k)["X"], np.ones((2, 2)))
    cache.root.write_bytes(b"{not json", "meta", f"{k}.json")
    assert cache.get_json("meta", k) is None


def test_every_entry_is_verified_and_a_bad_one_deleted(cache, caplog):
    """Truncated, one byte flipped, copied under another key, another schema, a 100k-deep
    JSON (RecursionError when parsed) and a caller's rejection: each is a miss, logged in one
    warning line and deleted — never raised."""
    k, k2 = cache.key("stats", "a"), cache.key("stats", "b")
    X = np.arange(600, dtype=np.float64).reshape(200, 3)
    uri = cache.put_arrays("stats", k, {"X": X})
    good = cache.root.read_bytes("stats", f"{k}.npz")
    assert good.startswith(b"otaudit-cache\n") and b'"sum": "sha256:' in good
    flipped = bytearray(good)
    flipped[-50] ^= 1
    bad = {
        "truncated": good[:100],
        "flipped": bytes(flipped),
        "schema": good.replace(b'"schema": 1', b'"schema": 9'),
    }
    for what, data in bad.items():
        cache.root.write_bytes(data, "stats", f"{k}.npz")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="otaudit.data.cache"):
            assert cache.get_arrays("stats", k) is None, what
        assert len(caplog.records) == 1 and "rejected" in caplog.text, what
        assert not cache.exists("stats", k), what
    cache.root.write_bytes(good, "stats", f"{k2}.npz")  # a valid entry under another key
    assert cache.get_arrays("stats", k2) is None and not cache.exists("stats", k2)
    cache.put_arrays("stats", k, {"X": X})
    assert cache.get_arrays("stats", k, validate=lambda a: "no y" if "y" not in a else None) is None
    assert not cache.exists("stats", k) and uri.endswith(f"{k}.npz")
    # deep JSON: sealed with a correct checksum (as a forger with write access could)
    deep = b"[" * 100_000 + b"]" * 100_000
    cache.root.write_bytes(cache._seal(("pair", f"{k}.json"), deep), "pair", f"{k}.json")
    assert cache.get_json("pair", k) is None and not cache.exists("pair", k, "json")


def test_hmac_secret_rejects_entries_sealed_without_it(tmp_path):
    store = Store(str(tmp_path / "out"))
    plain, keyed = Cache(store, secret=""), Cache(store, secret="s3cret")
    k = plain.key("pair", "x")
    plain.put_json("pair", k, {"value": 1.0})
    assert plain.get_json("pair", k) == {"value": 1.0}
    assert keyed.get_json("pair", k) is None  # plain sha256: a forger needs no secret
    keyed.put_json("pair", k, {"value": 2.0})
    assert b"hmac-sha256:" in store.read_bytes("_cache", "pair", f"{k}.json")
    assert keyed.get_json("pair", k) == {"value": 2.0}
    assert Cache(store, secret="other").get_json("pair", k) is None


def test_bad_kind_or_key(cache):
    with pytest.raises(InputError, match="fix:"):
        cache.get_arrays("../x", "ab" * 16)
    with pytest.raises(InputError, match="fix:"):
        cache.get_arrays("embeddings", "../../etc")
    with pytest.raises(InputError, match="Python objects"):
        cache.put_arrays("e", cache.key("e", "x"), {"o": np.array([object()], dtype=object)})


# --- the cache never serves numbers from older code ----------------------------------------


def test_every_config_constant_is_in_exactly_one_section():
    """The fingerprints read config by section: a constant outside every section would
    change numbers without changing any cache key."""
    from otaudit import config

    constants = {
        k for k in vars(config) if k.isupper() and k not in ("NUMERICS", "DATA", "PIPELINE")
    }
    listed = [*config.NUMERICS, *config.DATA, *config.PIPELINE]
    assert len(listed) == len(set(listed))
    assert set(listed) == constants


def test_code_fingerprint_follows_config_values(monkeypatch):
    from otaudit import config
    from otaudit.data.cache import code_fingerprint

    before = {k: code_fingerprint(k) for k in ("emb", "stats", "pair")}
    monkeypatch.setattr(config, "SINKHORN_TOL", config.SINKHORN_TOL / 10)  # a numerics constant
    after = {k: code_fingerprint(k) for k in before}
    assert after["emb"] == before["emb"]
    assert after["stats"] != before["stats"] and after["pair"] != before["pair"]
    monkeypatch.setattr(config, "SHARD_ROWS", config.SHARD_ROWS + 1)  # a data constant
    assert code_fingerprint("emb") != before["emb"]
    monkeypatch.undo()
    assert {k: code_fingerprint(k) for k in before} == before  # values, not history


def test_source_digest_follows_the_source_and_is_read_once(monkeypatch, tmp_path):
    from otaudit.data import cache as cache_mod

    (tmp_path / "core").mkdir()
    src = tmp_path / "core" / "solver.py"
    src.write_text("TOL = 1e-6\n")
    monkeypatch.setattr(cache_mod, "_PACKAGE_DIR", tmp_path)
    cache_mod._source_digest.cache_clear()
    try:
        d1 = cache_mod._source_digest(("core",))
        src.write_text("TOL = 1e-7\n")
        assert cache_mod._source_digest(("core",)) == d1  # memoised: read once per process
        cache_mod._source_digest.cache_clear()  # a new process
        assert cache_mod._source_digest(("core",)) != d1
    finally:
        cache_mod._source_digest.cache_clear()


def _audit_once(plan):
    """The audit layer's work for every dataset and pair of ``plan`` (what the tasks call)."""
    import torch

    from otaudit.audit.measures import compute_pairs
    from otaudit.audit.prepare import prepare_dataset

    refs = {spec.name: prepare_dataset(spec, plan) for spec in plan.manifest.datasets}
    rows = compute_pairs(plan.pairs, refs, plan, plan.measures, torch.device("cpu"))
    return refs, rows


def test_changed_numeric_constant_recomputes_unchanged_hits(tmp_path, monkeypatch):
    from otaudit import config
    from otaudit.audit.plan import load_plan
    from otaudit.data.parquet import write_dataset_parquet

    rng = np.random.default_rng(0)
    uris = [
        write_dataset_parquet(
            str(tmp_path / "data"), n, rng.normal(size=(30, 3)), rng.integers(0, 2, 30)
        )
        for n in ("a", "b")
    ]
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"name: fp\noutput: {tmp_path / 'out'}\ndatasets:\n"
        + "".join(
            f"  - {{name: {n}, uri: '{u}', label: label}}\n"
            for n, u in zip("ab", uris, strict=True)
        )
        + "measures:\n  otdd: {inner: exact}\n  sliced: {}\n"
    )
    plan = load_plan(str(manifest), None, "r1", 1)
    refs1, rows1 = _audit_once(plan)
    assert not any(r.cache_hit for r in refs1.values()) and not any(r["cached"] for r in rows1)
    refs2, rows2 = _audit_once(plan)  # unchanged code and config: everything from the cache
    assert all(r.cache_hit for r in refs2.values()) and all(r["cached"] for r in rows2)
    assert [r["value"] for r in rows2] == [r["value"] for r in rows1]
    # a numerics constant changes: statistics and pair results are recomputed; the
    # embeddings (which do not depend on it) still come from the cache (nothing re-read)
    monkeypatch.setattr(config, "SLICED_N_PROJECTIONS", config.SLICED_N_PROJECTIONS + 1)
    refs3, rows3 = _audit_once(plan)
    assert not any(r.cache_hit for r in refs3.values())
    assert all(r.read_seconds == 0.0 and r.embed_seconds == 0.0 for r in refs3.values())
    assert not any(r["cached"] for r in rows3)
    assert [r["status"] for r in rows3] == ["ok", "ok"]


def test_every_fingerprinted_source_exists():
    """A renamed module must be renamed in CODE_OF too (else its edits would not re-key)."""
    from otaudit.data import cache as cache_mod

    for kind, (paths, sections) in cache_mod.CODE_OF.items():
        for rel in paths:
            assert (cache_mod._PACKAGE_DIR / rel).exists(), (kind, rel)
        assert sections and all(isinstance(s, str) for s in sections)
