"""Bit-for-bit regression of the mini-batch bounds on fixed seeds.

The values in ``RECORDED`` were produced by the code before the stage refactor of issue 11
(``python tests/test_minibatch_regression.py`` prints them). The refactor must not change a
single bit: comparisons are ``==`` on the float64 bounds (no tolerance — the same
operations in the same order give the same floats on the same machine and library
versions). A change of numerics on purpose (a new default, another Sinkhorn loop) must
re-record them and say why in the commit.

Cases: every partition x coupling with refine 0 and 1, budgets, weights, n != m, the
lower-bound rounds and dual ascent, the batched Sinkhorn block solver and the OTDD cost
through ``otaudit.otdd(..., solver="minibatch")``. Most cases switch the full-problem dual
ascent off (``lower_sinkhorn=0``) so that they pin the mini-batch stages only; the cases
named ``*ascent*`` and ``*sinkhorn*`` also pin :mod:`otaudit.core.sinkhorn`.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

import otaudit

PARTITIONS = ("aligned", "random")
COUPLINGS = ("diagonal", "optimal", "independent", "union", "greedy", "colgen")


def _clouds(seed: int, n: int, m: int, d: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(m, d)) * 1.3 + 0.4
    return X, Y


def _weights(seed: int, n: int, m: int):
    rng = np.random.default_rng(seed + 100)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum()


def cases() -> dict[str, dict]:
    out: dict[str, dict] = {}
    for p in PARTITIONS:
        for c in COUPLINGS:
            for refine in (0, 1):
                out[f"{p}-{c}-refine{refine}"] = dict(
                    data=(0, 90, 70, 3), partition=p, coupling=c, refine=refine, batch_size=20
                )
            out[f"{p}-{c}-budget4"] = dict(
                data=(1, 80, 80, 2), partition=p, coupling=c, refine=1, batch_size=16, budget=4
            )
        out[f"{p}-weights"] = dict(
            data=(2, 75, 60, 4), weights=True, partition=p, coupling="optimal", batch_size=16
        )
    out["aligned-lower-rounds3"] = dict(
        data=(3, 100, 64, 3), partition="aligned", coupling="optimal", batch_size=24, lower_rounds=3
    )
    out["random-lower-none"] = dict(
        data=(3, 100, 64, 3), partition="random", coupling="greedy", batch_size=24, lower="none"
    )
    out["aligned-ascent"] = dict(
        data=(4, 120, 110, 5),
        partition="aligned",
        coupling="optimal",
        batch_size=30,
        lower_sinkhorn=5,
    )
    out["random-union-perm3"] = dict(
        data=(5, 90, 70, 3),
        partition="random",
        coupling="union",
        batch_size=20,
        n_permutations=3,
    )
    out["aligned-sinkhorn-blocks"] = dict(
        data=(6, 96, 80, 3),
        partition="aligned",
        coupling="optimal",
        batch_size=24,
        refine=1,
        block_solver="sinkhorn",
    )
    out["otdd-minibatch"] = dict(otdd=True, batch_size=40, seed=0)
    return out


def compute(case: dict) -> dict:
    case = dict(case)
    if case.pop("otdd", False):
        D = load_digits()
        X, y = D.data.astype(np.float64), D.target
        r = otaudit.otdd(
            X[:160],
            y[:160],
            X[160:300],
            y[160:300],
            inner="gaussian",
            solver="minibatch",
            lower_sinkhorn=0,
            **case,
        )
    else:
        seed, n, m, d = case.pop("data")
        X, Y = _clouds(seed, n, m, d)
        if case.pop("weights", False):
            case["a"], case["b"] = _weights(seed, n, m)
        case.setdefault("lower_sinkhorn", 0)
        case.setdefault("seed", seed)
        r = otaudit.ot_bounds(X, Y, **case)
    return {"lower": r.lower, "upper": r.upper, "n_solves": r.n_solves}


RECORDED: dict[str, dict] = {
    "aligned-ascent": {"lower": 3.9132663268427645, "upper": 3.9733062199219704, "n_solves": 92},
    "aligned-colgen-budget4": {
        "lower": 0.592751739479864,
        "upper": 1.6925833782960207,
        "n_solves": 4,
    },
    "aligned-colgen-refine0": {
        "lower": 1.4971712091964346,
        "upper": 1.9274026554617532,
        "n_solves": 22,
    },
    "aligned-colgen-refine1": {
        "lower": 1.4639609014953583,
        "upper": 1.755325125396451,
        "n_solves": 32,
    },
    "aligned-diagonal-budget4": {
        "lower": 0.592751739479864,
        "upper": 1.6925833782960207,
        "n_solves": 4,
    },
    "aligned-diagonal-refine0": {
        "lower": 1.4971712091964346,
        "upper": 1.9274026554617523,
        "n_solves": 9,
    },
    "aligned-diagonal-refine1": {
        "lower": 1.4693218587910837,
        "upper": 1.7553251253964512,
        "n_solves": 19,
    },
    "aligned-greedy-budget4": {
        "lower": 0.592751739479864,
        "upper": 1.6925833782960207,
        "n_solves": 4,
    },
    "aligned-greedy-refine0": {
        "lower": 1.4971712091964346,
        "upper": 1.9274026554617534,
        "n_solves": 81,
    },
    "aligned-greedy-refine1": {
        "lower": 1.500789731668643,
        "upper": 1.7553251253964512,
        "n_solves": 91,
    },
    "aligned-independent-budget4": {
        "lower": 0.5548041581548965,
        "upper": 4.8444492693980745,
        "n_solves": 4,
    },
    "aligned-independent-refine0": {
        "lower": 0.8170865008145736,
        "upper": 7.128614357085187,
        "n_solves": 81,
    },
    "aligned-independent-refine1": {
        "lower": 1.1397933529090314,
        "upper": 2.644161474685894,
        "n_solves": 91,
    },
    "aligned-lower-rounds3": {
        "lower": 1.4850115746654606,
        "upper": 1.5452080849307084,
        "n_solves": 61,
    },
    "aligned-optimal-budget4": {
        "lower": 0.592751739479864,
        "upper": 1.6925833782960207,
        "n_solves": 4,
    },
    "aligned-optimal-refine0": {
        "lower": 1.4971712091964346,
        "upper": 1.9274026554617532,
        "n_solves": 22,
    },
    "aligned-optimal-refine1": {
        "lower": 1.4639609014953583,
        "upper": 1.755325125396451,
        "n_solves": 32,
    },
    "aligned-sinkhorn-blocks": {
        "lower": 1.257330644591157,
        "upper": 1.5489155392503753,
        "n_solves": 29,
    },
    "aligned-union-budget4": {
        "lower": 0.592751739479864,
        "upper": 1.6925833782960207,
        "n_solves": 4,
    },
    "aligned-union-refine0": {
        "lower": 1.4971712091964346,
        "upper": 1.9274026554617532,
        "n_solves": 16,
    },
    "aligned-union-refine1": {
        "lower": 1.4571928996693624,
        "upper": 1.7474874248092376,
        "n_solves": 26,
    },
    "aligned-weights": {"lower": 2.585312644783546, "upper": 2.7330348732418788, "n_solves": 63},
    "otdd-minibatch": {"lower": 1313.7739539781119, "upper": 1335.5988717942394, "n_solves": 77},
    "random-colgen-budget4": {
        "lower": 0.5838382692455826,
        "upper": 3.597307634201505,
        "n_solves": 4,
    },
    "random-colgen-refine0": {
        "lower": 1.194931700679458,
        "upper": 2.704258225163195,
        "n_solves": 20,
    },
    "random-colgen-refine1": {
        "lower": 1.5220579115632322,
        "upper": 1.7325543133292802,
        "n_solves": 30,
    },
    "random-diagonal-budget4": {
        "lower": 0.5838382692455826,
        "upper": 3.597307634201505,
        "n_solves": 4,
    },
    "random-diagonal-refine0": {
        "lower": 1.032675179836077,
        "upper": 3.028209507655415,
        "n_solves": 8,
    },
    "random-diagonal-refine1": {
        "lower": 1.467179817072712,
        "upper": 1.8945618985864376,
        "n_solves": 18,
    },
    "random-greedy-budget4": {
        "lower": 0.5838382692455826,
        "upper": 3.597307634201505,
        "n_solves": 4,
    },
    "random-greedy-refine0": {
        "lower": 1.194931700679458,
        "upper": 2.704258225163195,
        "n_solves": 20,
    },
    "random-greedy-refine1": {
        "lower": 1.5220579115632322,
        "upper": 1.7325543133292802,
        "n_solves": 30,
    },
    "random-independent-budget4": {
        "lower": 0.5681644997883606,
        "upper": 4.289545203602594,
        "n_solves": 4,
    },
    "random-independent-refine0": {
        "lower": 0.5901451660085186,
        "upper": 2.9690794034207544,
        "n_solves": 20,
    },
    "random-independent-refine1": {
        "lower": 1.5585708736275223,
        "upper": 1.781134643274953,
        "n_solves": 30,
    },
    "random-lower-none": {"lower": None, "upper": 1.5442401218518214, "n_solves": 55},
    "random-optimal-budget4": {
        "lower": 0.5838382692455826,
        "upper": 3.597307634201505,
        "n_solves": 4,
    },
    "random-optimal-refine0": {
        "lower": 1.194931700679458,
        "upper": 2.704258225163195,
        "n_solves": 20,
    },
    "random-optimal-refine1": {
        "lower": 1.5220579115632322,
        "upper": 1.7325543133292802,
        "n_solves": 30,
    },
    "random-union-budget4": {
        "lower": 0.5838382692455826,
        "upper": 3.597307634201505,
        "n_solves": 4,
    },
    "random-union-perm3": {
        "lower": 1.5022653224718086,
        "upper": 1.5934788750401645,
        "n_solves": 57,
    },
    "random-union-refine0": {
        "lower": 1.2534431369705237,
        "upper": 2.760977401122927,
        "n_solves": 16,
    },
    "random-union-refine1": {
        "lower": 1.5443568720051508,
        "upper": 1.7306372247124646,
        "n_solves": 26,
    },
    "random-weights": {"lower": 2.533643918912655, "upper": 2.7116578644443976, "n_solves": 60},
}


@pytest.mark.parametrize("name", sorted(cases()))
def test_same_bounds_to_the_bit(name):
    got = compute(cases()[name])
    want = RECORDED[name]
    assert got["upper"] == want["upper"], (got, want)
    assert got["n_solves"] == want["n_solves"], (got, want)
    if want["lower"] is not None:  # lower="none" reports no lower bound (see OTResult)
        assert got["lower"] == want["lower"], (got, want)


if __name__ == "__main__":
    json.dump({k: compute(v) for k, v in cases().items()}, sys.stdout, indent=1, sort_keys=True)
