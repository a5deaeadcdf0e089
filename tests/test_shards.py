"""Shard-parallel preparation (issue 14): per-shard embeddings on a real Dask LocalCluster
equal the serial in-process path to the bit, a re-run re-embeds only changed shards, and
per-class moments merged from shards equal the whole dataset's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from otaudit.data.cache import Cache, embedding_key
from otaudit.data.embedding import SHARD_KIND, embed_dataset, embed_dataset_sharded
from otaudit.data.manifest import DatasetSpec
from otaudit.data.parquet import write_dataset_parquet
from otaudit.data.readers import inspect_dataset
from otaudit.data.storage import Store
from otaudit.dataset_distance.stats import (
    ClassMoments,
    label_key,
    merge_moments,
    shard_moments,
)

ROOT = Path(__file__).resolve().parents[1]


def _dataset(tmp_path: Path, n_files: int = 4, rows: int = 300, d: int = 6, seed: int = 0):
    """A directory of ``n_files`` Parquet files, 2 row groups each (8 shards), labelled."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "ds"
    root.mkdir()
    for i in range(n_files):
        X = rng.normal(size=(rows, d)).astype(np.float32) + 3.0 * i
        y = rng.integers(0, 3, size=rows)
        write_dataset_parquet(str(root), f"part{i}", X, y, row_group_size=rows // 2)
    spec = DatasetSpec.model_validate(
        {
            "name": "ds",
            "uri": str(root),
            "label": "label",
            "embedder": {"kind": "random-projection", "dim": 5, "seed": 1},
        }
    )
    return root, spec


def _run(spec, cache, executor=None):
    info = inspect_dataset(spec)
    eid = spec.embedder.id
    return embed_dataset_sharded(spec, None, None, cache, eid, info.fingerprint, executor=executor)


def _coarse(spec, cache_uri):
    """What the per-dataset Prefect task does, as one Dask task: secede, fan out shards."""
    from otaudit.tasks.datasets import shard_executor

    with shard_executor() as ex:
        assert ex is not None
        e = _run(spec, Cache(Store(cache_uri)), executor=ex)
    return e.X, e.y, e.n_embedded, e.keys


# --- merged statistics ---------------------------------------------------------------


def test_merged_moments_equal_whole_dataset():
    """Chan's pairwise merge over uneven shards == two-pass moments of the whole data.

    Tolerance 1e-12 relative: both sides are float64 with errors ~ (d + log2 shards) u
    spread^2 ~ 1e-14 here; a large offset (1e3) checks that nothing cancels raw sums."""
    rng = np.random.default_rng(3)
    n, d = 5000, 8
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 5, size=d) + 1e3
    y = rng.integers(0, 4, size=n)
    cuts = [0, 1, 700, 701, 2600, 4999, n]  # includes 1-row shards
    parts = [shard_moments(X[a:b], y[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = merge_moments(parts)
    for c in range(4):
        Xc = X[y == c]
        m = merged[label_key(int(c))]
        assert m.count == len(Xc)
        mean = Xc.mean(0)
        cov = np.cov(Xc, rowvar=False)
        assert np.max(np.abs(m.mean - mean) / np.abs(mean)) < 1e-12
        assert np.max(np.abs(m.covariance() - cov)) / np.max(np.abs(cov)) < 1e-12
        assert np.allclose(m.sum, Xc.sum(0), rtol=1e-12, atol=0)
    # the fold order is the shard order whatever order parts are given per class key
    again = merge_moments(parts)
    assert all(np.array_equal(again[k].comoment, merged[k].comoment) for k in merged)


def test_merged_moments_match_dataset_stats():
    """The merged moments agree with DatasetStats' order-free means/covariances (1e-12
    relative: two float64 algorithms on the same rows)."""
    from otaudit.dataset_distance import dataset_stats

    rng = np.random.default_rng(4)
    X = rng.normal(size=(900, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=900)
    st = dataset_stats(X, y, inner="gaussian", self_tables=False)
    merged = merge_moments([shard_moments(X[a : a + 300], y[a : a + 300]) for a in (0, 300, 600)])
    for k, c in enumerate(st.classes):
        m = merged[label_key(c)]
        assert m.count == st.counts[k]
        assert np.max(np.abs(m.mean - st.means[k].numpy())) < 1e-12 * 4
        assert np.max(np.abs(m.covariance() - st.covs[k].numpy())) < 1e-12 * 4


def test_empty_merge_identity():
    m = ClassMoments.of(np.ones((3, 2)))
    z = ClassMoments(0, np.zeros(2), np.zeros((2, 2)))
    assert z.merge(m) is m and m.merge(z) is m


# --- serial path -----------------------------------------------------------------------


def test_serial_sharded_equals_single_task_path(tmp_path):
    """The shard path (in process) gives today's single-task embedding to the bit, and a
    second run is all cache hits."""
    _, spec = _dataset(tmp_path)
    info = inspect_dataset(spec)
    old = embed_dataset(spec, None, info.n_shards, None)
    cache = Cache(Store(str(tmp_path / "out")))
    e = _run(spec, cache)
    assert e.X.tobytes() == old.X.tobytes() and np.array_equal(e.y, old.y)
    assert e.n_embedded == info.n_shards == 8
    assert _run(spec, cache).n_embedded == 0
    assert embedding_key(cache, info.fingerprint, spec.embedder.id)  # unchanged key policy


# --- real LocalCluster ---------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    import cloudpickle
    from distributed import Client, LocalCluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def test_cluster_equals_serial_and_reembeds_only_changed_shard(tmp_path, client):
    """On 2 single-thread workers (the coarse task secedes, so it cannot deadlock its own
    worker): gathered embedding == serial to the bit, every shard ran as its own Dask task,
    and after rewriting one file only that file's 2 shards are re-embedded."""
    root, spec = _dataset(tmp_path)
    serial = _run(spec, Cache(Store(str(tmp_path / "serial"))))
    par_uri = str(tmp_path / "par")
    X, y, n_emb, keys = client.submit(_coarse, spec, par_uri, pure=False).result(timeout=600)
    assert X.tobytes() == serial.X.tobytes() and np.array_equal(y, serial.y)
    assert n_emb == 8 and keys == serial.keys
    # identical cache contents: same shard keys, same bytes of every shard's features
    c_par, c_ser = Cache(Store(par_uri)), Cache(Store(str(tmp_path / "serial")))
    for k in keys:
        a, b = c_par.get_arrays(SHARD_KIND, k), c_ser.get_arrays(SHARD_KIND, k)
        assert a["X"].tobytes() == b["X"].tobytes()
    # the shard tasks ran on both workers
    log = client.run(lambda dask_worker: len(dask_worker.data), nanny=False)
    assert len(log) == 2
    # OTDD of the gathered data: identical input -> identical value
    import otaudit

    r_ser = otaudit.otdd(serial.X, serial.y, serial.X[:400], serial.y[:400])
    r_par = otaudit.otdd(X, y, X[:400], y[:400])
    assert r_ser.value == r_par.value and r_ser.lower == r_par.lower

    # rewrite one file: only its two row groups (shards) are re-embedded
    time.sleep(0.05)
    rng = np.random.default_rng(99)
    write_dataset_parquet(
        str(root),
        "part2",
        rng.normal(size=(300, 6)).astype(np.float32),
        rng.integers(0, 3, 300),
        row_group_size=150,
    )
    X2, _, n_emb2, keys2 = client.submit(_coarse, spec, par_uri, pure=False).result(timeout=600)
    assert n_emb2 == 2
    assert sum(a != b for a, b in zip(keys, keys2, strict=True)) == 2
    assert X2[:600].tobytes() == X[:600].tobytes() and X2[900:].tobytes() == X[900:].tobytes()


def test_shard_executor_is_none_outside_dask():
    from otaudit.tasks.datasets import shard_executor

    with shard_executor() as ex:
        assert ex is None


# --- the GPU check script ----------------------------------------------------------------


@pytest.mark.slow
def test_gpu_check_smoke_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh on a CPU machine: every step runs a tiny smoke version, the
    script says "no CUDA device", writes the results JSON and exits 0."""
    import json

    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_FORCE_CPU="1", OMP_NUM_THREADS="1")
    env["PYTHON"] = sys.executable
    t0 = time.perf_counter()
    p = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "no CUDA device" in p.stdout
    res = json.loads((tmp_path / "gpu_results.json").read_text())
    steps = {s["step"]: s for s in res["steps"]}
    assert set(steps) >= {
        "batched_blocks",
        "bounds_1m",
        "otdd_100k",
        "otdd_matrix",
        "sinkhorn_32k",
        "embed_throughput",
    }
    assert all(s["status"] == "ok" for s in steps.values()), steps
    assert time.perf_counter() - t0 < 1500  # 6 steps x 180 s per-step limit + start-up


# --- the audit's preparation -----------------------------------------------------------


def _plan(tmp_path: Path, out: str):
    from otaudit.audit.plan import load_plan

    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    uris = [
        write_dataset_parquet(
            str(data), n, rng.normal(size=(240, 3)), rng.integers(0, 3, 240), row_group_size=60
        )
        for n in ("a", "b")
    ]
    manifest = tmp_path / f"{out}.yaml"
    manifest.write_text(
        f"name: sh\noutput: {tmp_path / out}\ndatasets:\n"
        + "".join(
            f"  - {{name: {n}, uri: '{u}', label: label}}\n"
            for n, u in zip("ab", uris, strict=True)
        )
        + "measures:\n  otdd: {inner: gaussian}\n"
    )
    return load_plan(str(manifest), None, "r1", 1)


def test_prepare_with_executor_equals_serial_and_stores_merged_moments(tmp_path):
    """prepare_dataset with a real concurrent.futures executor == without (same cache
    keys, same statistics bytes, same OTDD to the bit); the statistics entry holds the
    moments merged from the 4 shards, equal to DatasetStats' (1e-12 relative, as above)."""
    from concurrent.futures import ThreadPoolExecutor

    from otaudit.audit.prepare import prepare_dataset
    from otaudit.dataset_distance import DatasetStats, otdd_from_stats

    p_ser, p_par = _plan(tmp_path, "ser"), _plan(tmp_path, "par")
    seen: list[tuple[int, int]] = []
    ser = [prepare_dataset(s, p_ser) for s in p_ser.manifest.datasets]
    with ThreadPoolExecutor(2) as ex:
        par = [
            prepare_dataset(s, p_par, executor=ex, progress=lambda d, t: seen.append((d, t)))
            for s in p_par.manifest.datasets
        ]
    assert seen[-1] == (4, 4) and len(seen) == 8
    stats = {}
    for name, plan, refs in (("ser", p_ser, ser), ("par", p_par, par)):
        arrs = [plan.cache().get_arrays("stats", r.stats_key) for r in refs]
        stats[name] = [DatasetStats.from_arrays(a) for a in arrs]
        for a, st in zip(arrs, stats[name], strict=True):
            assert np.array_equal(a["moment_counts"], st.counts)
            assert np.allclose(a["moment_means"], st.means.numpy(), rtol=1e-12, atol=1e-12)
            covs = a["moment_comoments"] / (a["moment_counts"][:, None, None] - 1)
            assert np.allclose(covs, st.covs.numpy(), rtol=1e-12, atol=1e-12)
    assert [r.stats_key for r in ser] == [r.stats_key for r in par]
    for s, q in zip(stats["ser"], stats["par"], strict=True):
        assert s.features.numpy().tobytes() == q.features.numpy().tobytes()
    v_ser = otdd_from_stats(*stats["ser"])
    v_par = otdd_from_stats(*stats["par"])
    assert (v_ser.lower, v_ser.upper) == (v_par.lower, v_par.upper)


@pytest.mark.parametrize(
    "labels",
    [
        lambda r: r.integers(0, 10, 3000),
        lambda r: r.integers(0, 10, 3000).astype(np.int32),
        lambda r: r.integers(0, 3, 3000).astype(np.uint8),
        lambda r: r.integers(0, 2, 3000).astype(bool),
        lambda r: np.array(["cat", "dog", "eel"])[r.integers(0, 3, 3000)],
        lambda r: np.where(r.random(3000) < 0.5, -0.0, 0.0),  # distinct keys, equal values
        lambda r: r.integers(0, 4, 3000).astype(np.float32) / 2,
        lambda r: np.array([1, "a", (1, 2)], dtype=object)[r.integers(0, 3, 3000)],
    ],
)
def test_shard_moments_group_labels_like_row_by_row(labels):
    """The vectorised grouping (np.unique) gives the keys and, per key, the very rows (in
    order, so the same bits) that keying every row with ``label_key`` gives."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 4))
    y = labels(rng)
    rows: dict[str, list[int]] = {}
    for i, v in enumerate(y.tolist()):
        rows.setdefault(label_key(v), []).append(i)
    got = shard_moments(X, y)
    assert set(got) == set(rows)
    for key, idx in rows.items():
        want = ClassMoments.of(X[np.asarray(idx)])
        assert got[key].count == want.count
        assert np.array_equal(got[key].mean, want.mean)
        assert np.array_equal(got[key].comoment, want.comoment)


def test_shard_pool_is_entered_only_for_two_or_more_shards_to_embed(tmp_path):
    """The per-dataset task's pool (which secedes the task and queues Dask futures) is
    opened only when there are >= 2 shards to embed: not for a one-shard dataset, not on a
    cache hit; the results equal the serial path's either way."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    from otaudit.audit.prepare import prepare_dataset

    entered: list[str] = []

    def pool_for(name):
        @contextlib.contextmanager
        def pool():
            entered.append(name)
            with ThreadPoolExecutor(2) as ex:
                yield ex

        return pool

    plan = _plan(tmp_path, "pool")  # two datasets of 4 shards each
    refs = [prepare_dataset(s, plan, shard_pool=pool_for(s.name)) for s in plan.manifest.datasets]
    assert entered == ["a", "b"]
    again = [prepare_dataset(s, plan, shard_pool=pool_for(s.name)) for s in plan.manifest.datasets]
    assert entered == ["a", "b"] and all(r.cache_hit for r in again)  # hits: no pool
    assert [r.stats_key for r in again] == [r.stats_key for r in refs]
    rng = np.random.default_rng(8)
    one = write_dataset_parquet(
        str(tmp_path / "one"), "c", rng.normal(size=(50, 3)), rng.integers(0, 2, 50)
    )
    spec = DatasetSpec.model_validate({"name": "c", "uri": one, "label": "label"})
    ref = prepare_dataset(spec, plan, shard_pool=pool_for("c"))
    assert entered == ["a", "b"] and ref.n_rows == 50  # one shard: embedded in place
