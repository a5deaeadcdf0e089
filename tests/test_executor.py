"""``executor=`` in the numerics (issue 14): any ``concurrent.futures.Executor`` — a thread
pool, a real Dask ``LocalCluster`` of worker processes — gives the same numbers as
``executor=None`` to the bit (``==``, never ``isclose``: the work units compute exactly what
the serial loop computes and are gathered in submission order), and a worker killed while a
pair runs does not change them (Dask reschedules the lost tasks)."""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import otaudit
from otaudit import config
from otaudit.core import parallel
from otaudit.core.costs import SqEuclidean, c_transform
from otaudit.core.partition import kmeans

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """A real LocalCluster: 2 worker processes x 1 thread (this machine has 2 cores)."""
    from distributed import Client, LocalCluster

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env
        ) as cluster,
        Client(cluster) as c,
    ):
        c.run(importlib.import_module, "otaudit.core.minibatch")  # warm: torch imports once
        yield c


def _clouds(n: int, m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = 0.7 * rng.normal(size=(m, d)) + 0.5
    return X, Y


def _same(r0, r1) -> None:
    assert (r1.lower, r1.upper, r1.value) == (r0.lower, r0.upper, r0.value)
    assert r1.n_solves == r0.n_solves
    assert r1.params == r0.params  # the executor is not a parameter of the result


# small cost blocks so that every pass has several row tiles to spread (the tiling is chosen
# in the calling process and sent with each task, so the workers need no patched config)
@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(config, "COST_BLOCK_BYTES", 2**20)


BOUNDS = dict(
    solver="minibatch",
    batch_size=128,
    coupling="diagonal",
    refine=2,
    target_gap=1.0,
    lower_sinkhorn=0,
)


def test_ot_bounds_thread_pool_identical_to_serial(small_tiles):
    X, Y = _clouds(1500, 1300, 6)
    r0 = otaudit.ot_bounds(X, Y, **BOUNDS)
    with ThreadPoolExecutor(2) as ex:
        r1 = otaudit.ot_bounds(X, Y, executor=ex, **BOUNDS)
    _same(r0, r1)
    assert r0.certified and r0.lower <= r0.upper


def test_ot_bounds_dask_identical_and_uses_both_workers(client, small_tiles):
    from distributed import get_task_stream

    X, Y = _clouds(1500, 1300, 6, seed=1)
    r0 = otaudit.ot_bounds(X, Y, **BOUNDS)
    with get_task_stream(client) as ts:
        r1 = otaudit.ot_bounds(X, Y, executor=client.get_executor(), **BOUNDS)
    _same(r0, r1)
    names = {t["key"].split("-")[0] for t in ts.data if isinstance(t["key"], str)}
    workers = {t["worker"] for t in ts.data}
    assert len(workers) == 2, workers  # the pair's work ran on both workers
    # block solves get the scattered cost and their blocks' indices (data by reference)
    assert {"_exact_chunk_shared", "_c_transform_chunk", "_residual_chunk"} <= names, names
    assert "_exact_chunk" not in names, names


def test_ot_bounds_process_pool_identical_to_serial(small_tiles):
    """A process pool shares nothing by reference: block solves carry their own points
    (``cost.sub``), still the serial numbers to the bit."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from otaudit.core import parallel

    X, Y = _clouds(900, 800, 5, seed=4)
    r0 = otaudit.ot_bounds(X, Y, **BOUNDS)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert not parallel.Pool(ex).by_reference
        r1 = otaudit.ot_bounds(X, Y, executor=ex, **BOUNDS)
    _same(r0, r1)


def test_sparse_route_dask_identical(client, small_tiles):
    """The anytime sparse rounds (c-transforms of the whole problem) with an executor."""
    X, Y = _clouds(700, 600, 4, seed=2)
    kw = dict(solver="sparse", target_gap=1e-3)
    cost = SqEuclidean(torch.as_tensor(X), torch.as_tensor(Y))
    r0 = otaudit.solve_ot(cost, **kw)
    r1 = otaudit.solve_ot(cost, executor=client.get_executor(), **kw)
    assert (r1.lower, r1.upper, r1.value) == (r0.lower, r0.upper, r0.value)


def test_otdd_minibatch_identical(client, small_tiles):
    X1, X2 = _clouds(900, 800, 5, seed=3)
    y1 = np.arange(900) % 4
    y2 = np.arange(800) % 3
    kw = dict(
        solver="minibatch", batch_size=128, coupling="diagonal", target_gap=1.0, lower_sinkhorn=0
    )
    r0 = otaudit.otdd(X1, y1, X2, y2, **kw)
    r1 = otaudit.otdd(X1, y1, X2, y2, executor=client.get_executor(), **kw)
    with ThreadPoolExecutor(2) as ex:
        r2 = otaudit.otdd(X1, y1, X2, y2, executor=ex, **kw)
    _same(r0, r1)
    _same(r0, r2)


def test_sliced_projections_dask_identical(client, small_tiles):
    """Sliced screening's projection chunks over the cluster: the serial estimate and
    certified lower bound to the bit, the chunks run on the workers."""
    from distributed import get_task_stream

    X, Y = _clouds(3000, 2500, 8, seed=6)
    rng = np.random.default_rng(6)
    y1, y2 = rng.integers(0, 4, 3000), rng.integers(0, 4, 2500)
    r0 = otaudit.sliced_otdd(X, y1, Y, y2, n_projections=200)
    with get_task_stream(client) as ts:
        r1 = otaudit.sliced_otdd(X, y1, Y, y2, n_projections=200, executor=client.get_executor())
    _same(r0, r1)
    assert r0.lower_certified and r0.lower <= r0.value
    names = {t["key"].split("-")[0] for t in ts.data if isinstance(t["key"], str)}
    assert "_projected_chunk" in names, names


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("side", ["x", "y"])
def test_c_transform_identical(client, fast, side):
    X, Y = _clouds(2000, 1700, 7, seed=4)
    cost = SqEuclidean(torch.as_tensor(X), torch.as_tensor(Y))
    f = torch.as_tensor(np.random.default_rng(5).normal(size=2000 if side == "x" else 1700))
    budget = 2**17  # several row tiles, and column tiles for the float64 path
    g0 = c_transform(cost, f, side=side, fast=fast, budget_bytes=budget)
    g1 = c_transform(
        cost, f, side=side, fast=fast, budget_bytes=budget, executor=client.get_executor()
    )
    with ThreadPoolExecutor(2) as ex:
        g2 = c_transform(cost, f, side=side, fast=fast, budget_bytes=budget, executor=ex)
    assert torch.equal(g0, g1) and torch.equal(g0, g2)


def test_kmeans_assignment_identical(small_tiles):
    Z = torch.as_tensor(_clouds(3000, 1, 5, seed=6)[0])
    w = torch.full((3000,), 1 / 3000, dtype=torch.float64)
    lab0, cent0 = kmeans(Z, w, 40, torch.Generator().manual_seed(0), n_iter=5)
    with ThreadPoolExecutor(2) as ex, parallel.using(ex) as pool:
        lab1, cent1 = kmeans(Z, w, 40, torch.Generator().manual_seed(0), n_iter=5)
    assert torch.equal(lab0, lab1) and torch.equal(cent0, cent1)
    assert pool.tasks >= 5 * 2  # every Lloyd iteration submitted its assignment chunks


def test_bad_executor_is_an_input_error():
    X, Y = _clouds(50, 50, 2)
    with pytest.raises(otaudit.InputError, match="executor"):
        otaudit.ot_bounds(X, Y, executor="threads", **BOUNDS)


@pytest.mark.slow
def test_worker_killed_mid_pair_same_numbers(client, small_tiles):
    """SIGKILL one worker process while the pair runs: its tasks are rescheduled on the
    other (and on the nanny's replacement); the pair completes with the serial numbers."""
    X, Y = _clouds(2500, 2500, 6, seed=7)
    kw = dict(BOUNDS, refine=3)
    r0 = otaudit.ot_bounds(X, Y, **kw)
    pids = client.run(os.getpid)  # worker address -> pid
    out: dict = {}

    def run() -> None:
        out["r"] = otaudit.ot_bounds(X, Y, executor=client.get_executor(), **kw)

    th = threading.Thread(target=run)
    th.start()
    time.sleep(min(1.0, 0.2 * r0.seconds))
    assert th.is_alive(), "the pair finished before the kill: make it larger"
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    th.join(timeout=300)
    assert not th.is_alive()
    _same(r0, out["r"])
    assert not _alive(pids[victim])  # it really died (the nanny starts a new process)
    client.wait_for_workers(2, timeout=300)  # the replacement, for the next tests


def _alive(pid: int) -> bool:
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


def _pair_on_worker(X, Y, threshold: int):
    """Runs as ONE Dask task on a 1-thread worker, as a pair-block task does: the pipeline's
    hook (``compute_pair`` with :func:`otaudit.tasks.devices.cluster_executor`) on a pair
    above ``threshold`` points (set in this worker process only: the test's pair is small)."""
    from otaudit import config as wconfig
    from otaudit.audit.measures import compute_pair
    from otaudit.audit.prepare import DatasetRef
    from otaudit.tasks.devices import cluster_executor

    wconfig.PAIR_EXECUTOR_MIN_POINTS = threshold

    def ref(name: str, n: int) -> DatasetRef:
        return DatasetRef(
            name, "mem://" + name, name, "identity", n, 0, X.shape[1], False, name, name,
            False, 0.0, 0.0, 0.0, 0.0,
        )  # fmt: skip

    arrays = {"a": X, "b": Y}
    params = {k: v for k, v in BOUNDS.items() if k != "solver"} | {"solver": "minibatch"}
    r = compute_pair(
        "ot_bounds", params, lambda kind, rf: arrays[rf.name], ref("a", len(X)),
        ref("b", len(Y)), executor=cluster_executor,
    )  # fmt: skip
    return r.lower, r.upper, r.value


def test_large_pair_task_uses_the_whole_cluster(client):
    """One pair task on a 2 x 1-thread cluster: above the threshold it secedes and spreads
    its block solves over both workers (no deadlock of the worker running it), with the
    numbers of an in-process run; below the threshold it stays one task."""
    from distributed import get_task_stream

    X, Y = _clouds(1200, 1000, 5, seed=8)
    r0 = otaudit.ot_bounds(X, Y, **BOUNDS)
    with get_task_stream(client) as ts:
        big = client.submit(_pair_on_worker, X, Y, 1000, pure=False).result(timeout=300)
    assert big == (r0.lower, r0.upper, r0.value)
    inner = [t for t in ts.data if str(t["key"]).startswith("_exact_chunk")]
    assert len({t["worker"] for t in inner}) == 2  # both workers solved blocks of the pair
    with get_task_stream(client) as ts:
        small = client.submit(_pair_on_worker, X, Y, 10**9, pure=False).result(timeout=300)
    assert small == big
    assert [str(t["key"]).split("-")[0] for t in ts.data] == ["_pair_on_worker"]
