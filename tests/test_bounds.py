"""lib/core/minibatch, lib/core/solve.py: certified mini-batch bounds against POT's exact LP
(tests/oracles.py) and a closed form.

Slack: bounds are compared to the LP with ``oracles.RTOL`` = 1e-9 relative, whose derivation
(summation round-off of both sides plus the aligned partition's 1e-12 mass drops) is stated
in tests/oracles.py; anything larger would be a real violation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import otaudit
from otaudit import InputError
from otaudit.core.costs import SqEuclidean
from otaudit.core.minibatch import minibatch_bounds
from otaudit.core.solve import solve_ot
from tests.oracles import RTOL, brackets, exact


@pytest.fixture(scope="module")
def digits():
    D = load_digits().data.astype(np.float64)
    p = np.random.default_rng(0).permutation(len(D))
    X, Y = D[p[:300]], D[p[300:550]]  # 300 vs 250 points, 64-d (real, offline)
    return X, Y, exact(X, Y)


@pytest.mark.parametrize("partition", ["aligned", "random"])
@pytest.mark.parametrize(
    "coupling", ["diagonal", "optimal", "independent", "union", "greedy", "colgen"]
)
def test_digits_all_couplings_bracket(digits, partition, coupling):
    X, Y, ex = digits
    for seed in (0, 1):
        for budget in (3, None):
            r = otaudit.ot_bounds(
                X,
                Y,
                batch_size=70,
                partition=partition,
                coupling=coupling,
                budget=budget,
                seed=seed,
            )
            assert r.certified and brackets(r, ex), (r.lower, ex, r.upper)
            if budget is not None:
                assert r.n_solves <= budget


@given(
    n=st.integers(5, 80),
    m=st.integers(5, 80),
    d=st.integers(1, 6),
    bs=st.integers(3, 40),
    seed=st.integers(0, 10**6),
    partition=st.sampled_from(["aligned", "random"]),
    coupling=st.sampled_from(["diagonal", "optimal", "independent", "union", "greedy"]),
)
@settings(max_examples=25, deadline=None)
def test_random_problems_bracket(n, m, d, bs, seed, partition, coupling):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(m, d)) * rng.uniform(0.5, 2) + rng.normal(size=d)
    r = otaudit.ot_bounds(
        X, Y, batch_size=bs, partition=partition, coupling=coupling, seed=seed % 7
    )
    assert brackets(r, exact(X, Y))


def test_optimal_coupling_below_independent(digits):
    X, Y, ex = digits
    for seed in (0, 1, 2):
        kw = dict(batch_size=60, partition="random", seed=seed, refine=0)
        opt = otaudit.ot_bounds(X, Y, coupling="optimal", **kw)
        ind = otaudit.ot_bounds(X, Y, coupling="independent", **kw)
        assert opt.extra["coupling_optimal_proven"] is True
        # OT(alpha, beta; W) <= <alpha x beta, W> on the same blocks; round-off slack
        assert opt.upper <= ind.upper * (1 + RTOL)


@pytest.mark.parametrize(
    "partition,coupling", [("random", "optimal"), ("aligned", "diagonal"), ("random", "greedy")]
)
def test_more_budget_never_wider(digits, partition, coupling):
    X, Y, ex = digits
    widths = []
    for budget in (2, 5, 10, 20, 40, 80, None):
        r = otaudit.ot_bounds(
            X, Y, batch_size=70, partition=partition, coupling=coupling, budget=budget
        )
        assert brackets(r, ex)
        widths.append(r.upper - r.lower)
    # monotone up to float64 round-off of the bounds
    for w0, w1 in zip(widths, widths[1:], strict=False):
        assert w1 <= w0 + RTOL * ex


def test_exact_solve_is_exact():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(120, 4)), rng.normal(size=(90, 4))
    r = otaudit.ot_bounds(X, Y)
    # issue 13: the exact LP reports its verified interval (float margins, ~1e-14 rel)
    assert r.method == "exact" and r.lower <= r.value <= r.upper and r.gap_rel <= 1e-12
    assert r.value == pytest.approx(exact(X, Y), rel=1e-12)  # same LP; round-off only
    # one block holding everything is also exact
    r1 = otaudit.ot_bounds(X, Y, batch_size=500, partition="random", coupling="diagonal")
    assert r1.n_solves == 1
    assert r1.upper == pytest.approx(exact(X, Y), rel=1e-12)
    assert r1.lower == pytest.approx(exact(X, Y), rel=1e-9)  # c-transform of exact duals


def test_unequal_sizes_batch_not_dividing_torch_float32():
    rng = np.random.default_rng(4)
    X = torch.tensor(rng.normal(size=(203, 5)), dtype=torch.float32)
    Y = torch.tensor(rng.normal(size=(97, 5)) + 1, dtype=torch.float32)
    ex = exact(X.double().numpy(), Y.double().numpy())
    for partition in ("aligned", "random"):
        r = otaudit.ot_bounds(X, Y, batch_size=33, partition=partition)
        assert brackets(r, ex)
        assert isinstance(r.upper, float)


def test_generic_cost_through_minibatch_and_solve_ot():
    rng = np.random.default_rng(5)
    X = torch.tensor(rng.normal(size=(150, 3)))
    Y = torch.tensor(rng.normal(size=(140, 3)) + 0.5)
    cost = SqEuclidean(X, Y)
    ex = solve_ot(cost, solver="exact")
    assert ex.certified and ex.lower <= ex.value <= ex.upper and ex.n_solves == 1
    assert ex.gap_rel <= 1e-12  # issue 13: verified interval of the exact LP
    r = minibatch_bounds(cost, batch_size=40, partition="aligned", coupling="diagonal")
    assert brackets(r, ex.value)
    assert solve_ot(cost).method == "exact"  # small: auto = exact


def test_closed_form_brenier_where_lp_cannot_run():
    """Y = grad phi(X) with phi(x) = 0.5 x^T A x + sum softplus(x), A SPD: phi is convex, so
    the identity pairing is optimal (Brenier) and W2^2 = mean ||x - grad phi(x)||^2."""
    rng = np.random.default_rng(6)
    n, d = 3000, 8
    X = rng.normal(size=(n, d))
    Q = rng.normal(size=(d, d))
    A = Q @ Q.T / d + 0.5 * np.eye(d)
    Y = X @ A + 1 / (1 + np.exp(-X))  # grad of 0.5 x^T A x + sum softplus(x)
    w2 = float(np.mean(((X - Y) ** 2).sum(1)))
    Y = Y[rng.permutation(n)]
    r = otaudit.ot_bounds(X, Y, batch_size=256, partition="aligned", coupling="diagonal", refine=2)
    assert r.lower <= w2 * (1 + RTOL) and w2 <= r.upper * (1 + RTOL)
    assert r.gap_rel < 0.5  # loose sanity: the interval is informative


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(budget=0), "budget"),
        (dict(partition="grid"), "partition.*aligned, random"),
        (dict(coupling="best"), "coupling.*diagonal"),
    ],
)
def test_bad_knobs(kwargs, match):
    X = np.zeros((5, 2))
    with pytest.raises(InputError, match=match):
        otaudit.ot_bounds(X, X + 1, **kwargs)


def test_bad_inputs():
    X = np.random.default_rng(0).normal(size=(10, 3))
    bad = X.copy()
    bad[4, 1] = math.nan
    with pytest.raises(InputError, match="NaN or inf.*row 4"):
        otaudit.ot_bounds(bad, X)
    bad[4, 1] = math.inf
    with pytest.raises(InputError, match="NaN or inf"):
        otaudit.ot_bounds(X, bad)
    with pytest.raises(InputError, match="empty"):
        otaudit.ot_bounds(np.zeros((0, 3)), X)
    with pytest.raises(InputError, match="dimension mismatch"):
        otaudit.ot_bounds(X, X[:, :2])


def test_sinkhorn_dual_ascent_tightens_certified_lower_bound():
    """The dual ascent (default for small problems) never lowers the certified bound, stays
    below the exact LP, and on a 10-d Gaussian pair closes most of the lower gap."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(700, 10)), rng.normal(size=(700, 10)) * 1.5 + 0.3
    ex = exact(X, Y)
    kw = dict(batch_size=100, partition="aligned", coupling="optimal")
    r0 = otaudit.ot_bounds(X, Y, lower_sinkhorn=0, **kw)
    r1 = otaudit.ot_bounds(X, Y, lower_sinkhorn=5, **kw)
    assert brackets(r0, ex) and brackets(r1, ex), (r0.lower, r1.lower, ex)
    assert r1.lower >= r0.lower
    # measured: -4.3 % without, -0.15 % with; 1 % leaves room for BLAS/platform differences
    assert r1.lower >= ex * (1 - 0.01), (r1.lower, ex)


def test_identical_clouds_in_any_order_give_zero_width_with_aligned_partition():
    """Shared k-means cells cut X and a shuffled copy of X identically, so every block
    solve is exact with cost 0: the certified interval is [0, 0] (no tolerance needed)."""
    from sklearn.datasets import load_digits

    X = load_digits().data[:600]
    Y = X[np.random.default_rng(0).permutation(600)]
    for kw in ({"batch_size": 128}, {"batch_size": 128, "budget": 16}):
        r = otaudit.ot_bounds(X, Y, **kw)
        assert (r.lower, r.value, r.upper) == (0.0, 0.0, 0.0), kw
    r = otaudit.ot_bounds(X, Y, batch_size=64, partition="random")
    assert r.lower >= 0.0  # OT of a non-negative cost is >= 0: certified and reported


def test_solver_options_route_to_the_chosen_solver():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(150, 3)), rng.normal(size=(120, 3)) + 1
    ex = exact(X, Y)
    # ot_bounds: any mini-batch option selects the mini-batch bounds (as batch_size does)
    r = otaudit.ot_bounds(X, Y, refine=1)
    assert r.method.startswith("minibatch") and brackets(r, ex)
    # solve_ot "auto": options of the solver it did not pick are ignored...
    cost = SqEuclidean(torch.tensor(X), torch.tensor(Y))
    r = solve_ot(cost, solver="auto", batch_size=32, block_solver="sinkhorn")
    assert r.method == "exact" and abs(r.value - ex) <= RTOL * ex
    # ...and so does otdd with solver="auto" (the manifest's `otdd: {options: ...}`)
    D = load_digits()
    args = (D.data[:150], D.target[:150], D.data[150:300], D.target[150:300])
    r = otaudit.otdd(*args, batch_size=64, block_solver="auto")
    assert "outer=exact" in r.method
    # a named solver that does not take the option, or an option nobody takes: one line
    with pytest.raises(InputError, match="'batch_size' does not apply to solver='exact'"):
        solve_ot(cost, solver="exact", batch_size=32)
    with pytest.raises(InputError, match="option 'colour'"):
        solve_ot(cost, solver="auto", colour=1)


def test_results_say_what_is_known():
    """Per-bound certificates and kind: exact LP -> "exact"; mini-batch -> "bracketed";
    lower="none" -> no lower bound (-inf, not certified) and value = the upper bound."""
    rng = np.random.default_rng(7)
    X, Y = rng.normal(size=(90, 3)), rng.normal(size=(70, 3)) + 0.5
    ex = otaudit.ot_bounds(X, Y)
    assert ex.kind == "exact" and ex.lower_certified and ex.upper_certified and ex.converged
    kw = dict(batch_size=20, partition="random", coupling="greedy", lower_sinkhorn=0, seed=3)
    kw["target_gap"] = 1.0  # the mini-batch result itself (no anytime sparse rounds)
    r = otaudit.ot_bounds(X, Y, **kw)
    assert r.kind == "bracketed" and r.certified and r.value == 0.5 * (r.lower + r.upper)
    assert "width_rel" not in r.extra and r.gap_rel == (r.upper - r.lower) / r.upper
    assert r.to_dict()["kind"] == "bracketed" and r.to_dict()["lower_certified"] is True
    none = otaudit.ot_bounds(X, Y, lower="none", **kw)
    assert none.lower == -math.inf and not none.lower_certified and none.upper_certified
    assert none.value == none.upper == r.upper and none.kind == "estimate"
    assert not none.certified and none.gap_rel == math.inf
    # params record what was applied: refinement rounds run, dual ascent as run
    assert r.params["refine"] == otaudit.config.BOUNDS_REFINE_ROUNDS
    assert r.params["lower_sinkhorn"] == 0 and "lower_sinkhorn" not in none.params
    unproven = otaudit.ot_bounds(X, Y, batch_size=20, coupling="optimal", budget=2, refine=3)
    assert unproven.extra.get("coupling_optimal_proven") is not True
    assert unproven.params["refine"] == 0  # refinement needs a proven coupling
    with pytest.raises(InputError, match="unknown lower 'dual'.*lp\\+ctransform, none"):
        otaudit.ot_bounds(X, Y, lower="dual", **{k: v for k, v in kw.items() if k != "lower"})


def test_converged_is_computed_from_the_block_solves(monkeypatch):
    """Exact LP blocks always converge; batched Sinkhorn blocks (run with warnings off)
    report their own convergence: starved of iterations, the result says so (and stays
    certified: a rounded plan's cost above, a re-certified dual below)."""
    from otaudit import config

    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(120, 3)), rng.normal(size=(100, 3)) + 1
    ex = exact(X, Y)
    kw = dict(batch_size=30, refine=1, lower_sinkhorn=0, target_gap=1.0)
    assert otaudit.ot_bounds(X, Y, block_solver="exact", **kw).converged
    monkeypatch.setattr(config, "BOUNDS_BLOCK_SINKHORN_ITERS", 1)
    starved = otaudit.ot_bounds(X, Y, block_solver="sinkhorn", **kw)
    assert not starved.converged and starved.certified and brackets(starved, ex)


def test_typed_settings_and_named_diagnostics():
    from dataclasses import FrozenInstanceError

    from otaudit.core.minibatch import LowerCertificate, certify_lower
    from otaudit.core.settings import MinibatchSettings, SinkhornSettings, solver_settings

    s = solver_settings("minibatch", {"batch_size": 64, "refine": 0})
    assert isinstance(s, MinibatchSettings) and (s.batch_size, s.refine) == (64, 0)
    assert s.coupling == otaudit.config.COUPLING  # defaults from config
    with pytest.raises(FrozenInstanceError):
        s.batch_size = 3  # type: ignore[misc]
    assert solver_settings("exact", {"batch_size": 64}, auto=True).options() == {"max_iter": None}
    assert isinstance(solver_settings("sinkhorn", {"reg": 0.1}), SinkhornSettings)
    with pytest.raises(InputError, match="'reg' does not apply to solver='minibatch'.*sinkhorn"):
        solver_settings("minibatch", {"reg": 0.1})
    with pytest.raises(InputError, match="option 'colour'.*options: .*batch_size.*reg"):
        solver_settings("exact", {"colour": 1})
    # certify_lower returns named diagnostics (and still unpacks as (lower, f, g, info))
    rng = np.random.default_rng(9)
    X, Y = torch.tensor(rng.normal(size=(40, 2))), torch.tensor(rng.normal(size=(30, 2)))
    cost = SqEuclidean(X, Y)
    a, b = torch.full((40,), 1 / 40, dtype=torch.float64), torch.full((30,), 1 / 30).double()
    lx, ly = torch.arange(40) % 4, torch.arange(30) % 3
    c = certify_lower(cost, a, b, torch.zeros(40).double(), torch.zeros(30).double(), lx, ly)
    assert isinstance(c, LowerCertificate) and c.lb_blocks == [4, 3]
    lb, f, g, info = c
    assert lb == c.lower >= max(c.lb_lp_correction, c.lb_ctransform)  # the best pass
    assert lb <= exact(X.numpy(), Y.numpy()) * (1 + RTOL) and info["lb_blocks"] == [4, 3]


def test_otdd_params_record_only_applied_options():
    D = load_digits()
    args = (D.data[:150], D.target[:150], D.data[150:300], D.target[150:300])
    r = otaudit.otdd(*args, batch_size=64, block_solver="auto")  # auto -> exact outer LP
    assert "outer=exact" in r.method and "solver_options" not in r.params
    r = otaudit.otdd(*args, solver="minibatch", batch_size=64, lower_sinkhorn=0)
    assert r.params["solver_options"] == {"batch_size": 64, "lower_sinkhorn": 0}
    assert r.kind == "bracketed"


def test_heaviest_piece_is_the_one_stitching_rule():
    """Each point keeps the piece holding most of its mass; the first piece wins ties;
    uncovered points keep weight -1 (oracle: the rule applied by hand)."""
    from otaudit.core.partition import heaviest_piece

    t = torch.tensor
    pieces = [
        (t([0, 1]), t([0.2, 0.5], dtype=torch.float64), 7, t([1.0, 2.0], dtype=torch.float64)),
        (t([1, 2]), t([0.5, 0.1], dtype=torch.float64), 8, t([3.0, 4.0], dtype=torch.float64)),
        (t([0]), t([0.3], dtype=torch.float64), 9, t([5.0], dtype=torch.float64)),
    ]
    h = heaviest_piece(4, pieces, torch.device("cpu"))
    assert h.label.tolist() == [9, 7, 8, 0]  # point 1: tie 0.5/0.5 -> first piece (7)
    assert h.values.tolist() == [5.0, 2.0, 4.0, 0.0]
    assert h.weight.tolist() == [0.3, 0.5, 0.1, -1.0] and not h.covered
