"""Anytime certified bounds to a target width (lib/core/anytime.py) and the route choice
(lib/core/routes.py), through the public entry points."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import otaudit
from benchmarks.families import make
from otaudit import InputError, config
from otaudit.core.anytime import anytime_bounds
from otaudit.core.costs import SqEuclidean
from otaudit.core.routes import choose_route


def _cost(p):
    return SqEuclidean(torch.from_numpy(p.X), torch.from_numpy(p.Y))


def _inside(lo, up, truth):
    """``lo <= truth <= up`` up to the float64 round-off of the closed form's own sum over
    n <= 3000 terms (<= n 2^-53 ~ 3e-13 relative; 1e-12 stated)."""
    return lo <= truth * (1 + 1e-12) and truth * (1 - 1e-12) <= up


def _check_history(res, calls, truth):
    hist = res.extra["history"]
    assert len(hist) == len(calls) >= 1
    for (_, lo, up), (_, clo, cup) in zip(hist, calls, strict=True):
        assert (lo, up) == (clo, cup)  # progress saw exactly the recorded interval
        assert _inside(lo, up, truth)  # certified at every round, not only at the end
    los = [h[1] for h in hist]
    ups = [h[2] for h in hist]
    assert all(
        x <= y for x, y in zip(los, los[1:], strict=False)
    )  # never widens: lower non-decreasing
    assert all(x >= y for x, y in zip(ups, ups[1:], strict=False))  # ... and upper non-increasing
    assert (res.lower, res.upper) == (los[-1], ups[-1])


@pytest.mark.parametrize("name", ["student_t", "cluster_swap", "weights_nm"])
def test_interval_never_widens_and_contains_truth(name):
    p = make(name, 600, seed=1)
    calls = []
    res = anytime_bounds(
        _cost(p), p.a, p.b, target_gap=0.0, progress=lambda r, lo, up: calls.append((r, lo, up))
    )
    _check_history(res, calls, p.truth)
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
    assert res.converged and res.gap_rel <= 1e-9


def test_minibatch_warm_start_then_sparse_rounds_reach_the_target():
    # the weak case: one Gaussian cluster, where the mini-batch upper bound is loose
    p = make("gauss_affine", 1200, seed=0)
    calls = []
    res = otaudit.ot_bounds(
        p.X, p.Y, batch_size=128, target_gap=1e-3, progress=lambda *c: calls.append(c)
    )
    _check_history(res, calls, p.truth)
    assert calls[0][0] == 0  # round 0 = the mini-batch warm start
    assert res.method.startswith("minibatch[") and res.method.endswith("+sparse")
    assert res.converged and res.gap_rel <= 1e-3


def test_time_limit_is_respected_within_one_round():
    p = make("clusters", 2500, seed=2)
    limit = 0.05
    res = anytime_bounds(_cost(p), target_gap=0.0, time_limit=limit)
    rounds = res.extra["sparse_rounds"]
    assert len(rounds) == 1  # the first round always runs; no second one fits 0.05 s
    assert res.seconds <= limit + rounds[0]["seconds"] + 0.5  # 0.5 s: set-up outside rounds
    assert _inside(res.lower, res.upper, p.truth)
    assert res.converged == (res.gap_rel <= 0.0 + 1e-9)


def test_target_gap_stops_early_and_says_converged():
    p = make("clusters", 1500, seed=4)
    loose = anytime_bounds(_cost(p), target_gap=0.5)
    tight = anytime_bounds(_cost(p), target_gap=0.0)
    assert loose.converged and loose.gap_rel <= 0.5
    assert len(loose.extra["sparse_rounds"]) <= len(tight.extra["sparse_rounds"])
    assert tight.gap_rel <= 1e-9
    for r in (loose, tight):
        assert _inside(r.lower, r.upper, p.truth)


def test_auto_route_small_is_exact_and_large_is_sparse():
    assert choose_route(1000, 1000, 32) == "exact"
    assert choose_route(50_000, 50_000, 32) == "sparse"  # the dense LP cannot allocate
    assert choose_route(10**7, 10**7, 8, memory_budget_bytes=2**30) == "minibatch"
    p = make("plane", 800, seed=0)
    res = otaudit.ot_bounds(p.X, p.Y)
    assert res.method == choose_route(800, 800, 2)
    C = ot.dist(p.X, p.Y)
    s = 2.0 ** -np.floor(np.log2(C.max()))
    exact = float(ot.emd2(np.full(800, 1 / 800), np.full(800, 1 / 800), C * s)) / s
    assert res.lower <= exact * (1 + 1e-12) and exact <= res.upper * (1 + 1e-12)
    assert res.gap_rel <= 1e-9  # either route returns the exact answer


def test_auto_is_exact_wherever_the_dense_lp_fits_on_either_route(monkeypatch):
    """Where the dense LP fits, auto answers exactly: when the cost model picks the sparse
    route there it runs to certified optimality (target_gap 0), even if a looser target was
    asked; the answer equals POT's LP to the sparse route's resolution (1e-9 relative)."""
    from otaudit.core import routes

    p = make("clusters", 1200, seed=2)
    monkeypatch.setattr(config, "ROUTE_SPARSE_SAFETY", 1e-9)  # force the sparse route
    assert routes.exact_route(1200, 1200, 32) == "sparse" and routes.dense_fits(1200, 1200)
    res = otaudit.ot_bounds(p.X, p.Y, target_gap=0.2)
    assert res.method == "sparse" and res.params["target_gap"] == 0.0
    assert res.gap_rel <= 1e-9 and res.extra["certified_optimal"]
    C = ot.dist(p.X, p.Y)
    s = 2.0 ** -np.floor(np.log2(C.max()))
    exact = float(ot.emd2(np.full(1200, 1 / 1200), np.full(1200, 1 / 1200), C * s)) / s
    assert res.lower <= exact * (1 + 1e-12) and exact <= res.upper * (1 + 1e-12)
    sol = otaudit.solve_ot(_cost(p), target_gap=0.2)  # solve_ot's auto does the same
    assert sol.method == "sparse" and sol.gap_rel <= 1e-9
    # beyond the dense LP's memory the target applies again
    monkeypatch.setattr(config, "EXACT_BYTES_PER_ENTRY", 10**6)  # the LP no longer fits
    loose = otaudit.ot_bounds(p.X, p.Y, target_gap=0.2)
    assert loose.method == "sparse" and loose.params["target_gap"] == 0.2 and loose.converged


def test_route_model_prefers_the_sparse_route_from_a_few_thousand_points():
    """The refit model (config ROUTE_*, benchmarks/RESULTS_generalize.md, session 9): the LP
    at 1k points in 32-d and at 3k in 768-d, the sparse route at 3k in 32-d and at 10k in
    768-d (where the LP still fits)."""
    from otaudit.core.routes import exact_route

    assert exact_route(1000, 1000, 32) == "exact"
    assert exact_route(3000, 3000, 32) == "sparse"
    assert exact_route(3000, 3000, 768) == "exact"
    assert exact_route(10_000, 10_000, 768) == "sparse"
    # a cost without the float32 block (the OTDD cost) keeps the LP wherever it fits
    assert exact_route(3000, 3000, 32, fast=False) == "exact"
    assert exact_route(10_000, 10_000, 128, fast=False) == "exact"
    assert choose_route(50_000, 50_000, 32, fast=False) == "sparse"


def test_solve_ot_sparse_route_and_knob_errors():
    p = make("duplicates", 500, seed=0)
    res = otaudit.solve_ot(_cost(p), solver="sparse", target_gap=0.0)
    assert res.method == "sparse" and _inside(res.lower, res.upper, p.truth)
    assert res.gap_rel <= 1e-9
    with pytest.raises(InputError, match="time_limit.*fix"):
        otaudit.ot_bounds(p.X, p.Y, time_limit=0)
    with pytest.raises(InputError, match="progress"):
        otaudit.ot_bounds(p.X, p.Y, progress=3)
    with pytest.raises(InputError, match="does not apply"):
        otaudit.solve_ot(_cost(p), solver="sparse", batch_size=64)
    assert config.TARGET_GAP == 0.01


def test_otdd_minibatch_takes_the_anytime_knobs():
    rng = np.random.default_rng(0)
    X1 = rng.standard_normal((120, 4))
    X2 = rng.standard_normal((110, 4)) + 0.3
    y1 = rng.integers(0, 3, 120)
    y2 = rng.integers(0, 3, 110)
    exact = otaudit.otdd(X1, y1, X2, y2, solver="exact")
    res = otaudit.otdd(X1, y1, X2, y2, solver="minibatch", batch_size=32, target_gap=0.0)
    assert res.lower <= exact.value * (1 + 1e-9) + 1e-12
    assert exact.value <= res.upper * (1 + 1e-9) + 1e-12
    assert res.gap_rel <= 1e-6  # the sparse rounds close what the mini-batch bounds leave
