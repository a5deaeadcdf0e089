"""Bit-for-bit regression of the mini-batch bounds on fixed seeds.

The values in ``RECORDED_DEFAULT`` / ``RECORDED_AVX2`` (one table per CPU vector capability) were first produced by the code before the stage refactor of
issue 11, which reproduced them to the bit; they were re-recorded once, on purpose, for the
rigorous float margins and verified LPs of issue 13 (largest change: lower bounds -1.3e-5
relative, the OTDD case's -0.77 % from the block LP's verified tree duals; uppers -5e-7 from
the best refined plan), and once more when ``ot_bounds``/``otdd`` went through the
anytime loop of issue 12 (``target_gap=1.0`` here: the mini-batch result itself; 41 cases unchanged,
the dual-ascent, Sinkhorn-block and OTDD cases changed, cause not yet isolated), and for the
OTDD case once more when the Gaussian label table got its rigorous margins (issue 13:
lower -1.6e-3 = -1.2e-6 relative, upper +6.5e-4 = +4.9e-7; AVX512 table only, the AVX2
one awaits a recording on such a machine)
(``python tests/test_minibatch_regression.py`` prints them). A refactor
must not change a single bit: comparisons are ``==`` on the float64 bounds (no tolerance — the same
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
            target_gap=1.0,  # pin the mini-batch stages, not the anytime sparse rounds
            **case,
        )
    else:
        seed, n, m, d = case.pop("data")
        X, Y = _clouds(seed, n, m, d)
        if case.pop("weights", False):
            case["a"], case["b"] = _weights(seed, n, m)
        case.setdefault("lower_sinkhorn", 0)
        case.setdefault("seed", seed)
        case.setdefault("target_gap", 1.0)  # the mini-batch stages only (no sparse rounds)
        r = otaudit.ot_bounds(X, Y, **case)
    return {"lower": r.lower, "upper": r.upper, "n_solves": r.n_solves}


#: Recorded on the session-4 machine and CI's (their torch CPU capability was not AVX2: the
#: table below differs from it in 12 cases, so this one is used on every other capability).
RECORDED_DEFAULT: dict[str, dict] = {
    "aligned-ascent": {"lower": 3.9133329254712566, "n_solves": 92, "upper": 3.973306219921975},
    "aligned-colgen-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-colgen-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 22,
        "upper": 1.9274026554617556,
    },
    "aligned-colgen-refine1": {
        "lower": 1.4639609014951498,
        "n_solves": 32,
        "upper": 1.7553251253964532,
    },
    "aligned-diagonal-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783150792,
    },
    "aligned-diagonal-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 9,
        "upper": 1.9274026554617552,
    },
    "aligned-diagonal-refine1": {
        "lower": 1.4693218587908867,
        "n_solves": 19,
        "upper": 1.7553251253964535,
    },
    "aligned-greedy-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-greedy-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 81,
        "upper": 1.9274026554617556,
    },
    "aligned-greedy-refine1": {
        "lower": 1.5007897316684184,
        "n_solves": 91,
        "upper": 1.755325125396454,
    },
    "aligned-independent-budget4": {
        "lower": 0.5548041581547204,
        "n_solves": 4,
        "upper": 4.844449269599286,
    },
    "aligned-independent-refine0": {
        "lower": 0.8170865008143611,
        "n_solves": 81,
        "upper": 7.128614357132982,
    },
    "aligned-independent-refine1": {
        "lower": 1.1397933529087072,
        "n_solves": 91,
        "upper": 2.6441614746858977,
    },
    "aligned-lower-rounds3": {
        "lower": 1.4850115746652766,
        "n_solves": 61,
        "upper": 1.5452080849307104,
    },
    "aligned-optimal-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-optimal-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 22,
        "upper": 1.9274026554617556,
    },
    "aligned-optimal-refine1": {
        "lower": 1.4639609014951498,
        "n_solves": 32,
        "upper": 1.7553251253964532,
    },
    "aligned-sinkhorn-blocks": {
        "lower": 1.2567615112679793,
        "n_solves": 27,
        "upper": 1.548767959262816,
    },
    "aligned-union-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-union-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 16,
        "upper": 1.9274026554617554,
    },
    "aligned-union-refine1": {
        "lower": 1.457192899669193,
        "n_solves": 26,
        "upper": 1.7474874248092398,
    },
    "aligned-weights": {"lower": 2.5853126447833623, "n_solves": 63, "upper": 2.7330348732418823},
    "otdd-minibatch": {"lower": 1330.6595534585977, "n_solves": 74, "upper": 1335.5995257827444},
    "random-colgen-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-colgen-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-colgen-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-diagonal-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-diagonal-refine0": {
        "lower": 1.032675179836025,
        "n_solves": 8,
        "upper": 3.028209507655418,
    },
    "random-diagonal-refine1": {
        "lower": 1.4671798170725203,
        "n_solves": 18,
        "upper": 1.8945618985864399,
    },
    "random-greedy-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-greedy-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-greedy-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-independent-budget4": {
        "lower": 0.5681644997881856,
        "n_solves": 4,
        "upper": 4.289545203777579,
    },
    "random-independent-refine0": {
        "lower": 0.5901451660082556,
        "n_solves": 20,
        "upper": 2.969079403443872,
    },
    "random-independent-refine1": {
        "lower": 1.558570873627356,
        "n_solves": 30,
        "upper": 1.7811346432749555,
    },
    "random-lower-none": {"lower": None, "n_solves": 55, "upper": 1.5442401218518231},
    "random-optimal-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-optimal-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-optimal-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-union-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-union-perm3": {"lower": 1.5022653224716558, "n_solves": 57, "upper": 1.593478875040166},
    "random-union-refine0": {
        "lower": 1.253443136970309,
        "n_solves": 16,
        "upper": 2.7609774011229304,
    },
    "random-union-refine1": {
        "lower": 1.544356872004931,
        "n_solves": 26,
        "upper": 1.7306372247124666,
    },
    "random-weights": {"lower": 2.5336439189124698, "n_solves": 60, "upper": 2.7116578644444016},
}


#: Recorded on a 2-core AMD EPYC (Zen 3, family 25 model 1) whose torch CPU capability is
#: AVX2, same library versions (2026-12-02). Against RECORDED_DEFAULT, 10 cases differ in the
#: last 1-2 bits of the lower bound, the Sinkhorn-block case by 1.4e-5 relative (float32
#: matmuls on other vector kernels), and the OTDD case's lower bound by 1.2 % (its block LPs
#: are degenerate: a different round-off picks another optimal vertex, hence other — equally
#: certified — duals). That was the "cause not isolated" of the issue-12 re-recording.
RECORDED_AVX2: dict[str, dict] = {
    "aligned-ascent": {"lower": 3.9133329426429517, "n_solves": 92, "upper": 3.973306219921975},
    "aligned-colgen-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-colgen-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 22,
        "upper": 1.9274026554617556,
    },
    "aligned-colgen-refine1": {
        "lower": 1.46396090149515,
        "n_solves": 32,
        "upper": 1.7553251253964532,
    },
    "aligned-diagonal-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783150792,
    },
    "aligned-diagonal-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 9,
        "upper": 1.9274026554617552,
    },
    "aligned-diagonal-refine1": {
        "lower": 1.469321858790887,
        "n_solves": 19,
        "upper": 1.7553251253964535,
    },
    "aligned-greedy-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-greedy-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 81,
        "upper": 1.9274026554617556,
    },
    "aligned-greedy-refine1": {
        "lower": 1.5007897316684184,
        "n_solves": 91,
        "upper": 1.755325125396454,
    },
    "aligned-independent-budget4": {
        "lower": 0.5548041581547204,
        "n_solves": 4,
        "upper": 4.844449269599286,
    },
    "aligned-independent-refine0": {
        "lower": 0.8170865008143611,
        "n_solves": 81,
        "upper": 7.128614357132982,
    },
    "aligned-independent-refine1": {
        "lower": 1.1397933529087076,
        "n_solves": 91,
        "upper": 2.6441614746858977,
    },
    "aligned-lower-rounds3": {
        "lower": 1.4850115746652768,
        "n_solves": 61,
        "upper": 1.5452080849307104,
    },
    "aligned-optimal-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-optimal-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 22,
        "upper": 1.9274026554617556,
    },
    "aligned-optimal-refine1": {
        "lower": 1.46396090149515,
        "n_solves": 32,
        "upper": 1.7553251253964532,
    },
    "aligned-sinkhorn-blocks": {
        "lower": 1.2567577102720808,
        "n_solves": 27,
        "upper": 1.5487898587332114,
    },
    "aligned-union-budget4": {
        "lower": 0.5927517394796876,
        "n_solves": 4,
        "upper": 1.6925833783151094,
    },
    "aligned-union-refine0": {
        "lower": 1.4971712091962313,
        "n_solves": 16,
        "upper": 1.9274026554617554,
    },
    "aligned-union-refine1": {
        "lower": 1.4571928996691923,
        "n_solves": 26,
        "upper": 1.7474874248092398,
    },
    "aligned-weights": {"lower": 2.5853126447833623, "n_solves": 63, "upper": 2.7330348732418823},
    "otdd-minibatch": {"lower": 1314.539322779084, "n_solves": 74, "upper": 1335.5988717543726},
    "random-colgen-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-colgen-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-colgen-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-diagonal-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-diagonal-refine0": {
        "lower": 1.032675179836025,
        "n_solves": 8,
        "upper": 3.028209507655418,
    },
    "random-diagonal-refine1": {
        "lower": 1.4671798170725203,
        "n_solves": 18,
        "upper": 1.8945618985864399,
    },
    "random-greedy-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-greedy-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-greedy-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-independent-budget4": {
        "lower": 0.5681644997881856,
        "n_solves": 4,
        "upper": 4.289545203777579,
    },
    "random-independent-refine0": {
        "lower": 0.5901451660082556,
        "n_solves": 20,
        "upper": 2.969079403443872,
    },
    "random-independent-refine1": {
        "lower": 1.5585708736273558,
        "n_solves": 30,
        "upper": 1.7811346432749555,
    },
    "random-lower-none": {"lower": None, "n_solves": 55, "upper": 1.5442401218518231},
    "random-optimal-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-optimal-refine0": {
        "lower": 1.1949317006792042,
        "n_solves": 20,
        "upper": 2.7042582251631986,
    },
    "random-optimal-refine1": {
        "lower": 1.5220579115630513,
        "n_solves": 30,
        "upper": 1.7325543133292822,
    },
    "random-union-budget4": {
        "lower": 0.5838382692454078,
        "n_solves": 4,
        "upper": 3.597307634227293,
    },
    "random-union-perm3": {"lower": 1.5022653224716556, "n_solves": 57, "upper": 1.593478875040166},
    "random-union-refine0": {
        "lower": 1.253443136970309,
        "n_solves": 16,
        "upper": 2.7609774011229304,
    },
    "random-union-refine1": {
        "lower": 1.544356872004931,
        "n_solves": 26,
        "upper": 1.7306372247124666,
    },
    "random-weights": {"lower": 2.53364391891247, "n_solves": 60, "upper": 2.7116578644444016},
}

#: Tables by ``torch.backends.cpu.get_cpu_capability()``: the same operations in the same
#: order give the same floats only on the same vector kernels.
RECORDED_BY_CAPABILITY: dict[str, dict[str, dict]] = {"AVX2": RECORDED_AVX2}


def recorded() -> tuple[str, dict[str, dict]]:
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    return cap, RECORDED_BY_CAPABILITY.get(cap, RECORDED_DEFAULT)


#: Only between two machines' tables: relative differences seen between the AVX2 table and
#: the default one (largest: 1.2 % on the OTDD lower bound, see above) with room; a refactor
#: is held to ``==`` by the machine's own table.
CROSS_MACHINE_RTOL = {
    "otdd-minibatch": 3e-2,
    "aligned-sinkhorn-blocks": 1e-4,
    "aligned-ascent": 1e-7,  # full-problem Sinkhorn dual ascent: 4.4e-9 measured
}
CROSS_MACHINE_RTOL_DEFAULT = 1e-9

#: Cases changed on purpose after a table was recorded, on a machine of another capability:
#: until someone re-records them there, that table's entry is the previous code's and is
#: held to the cross-machine tolerance only (the change itself is a few 1e-7 relative, far
#: inside it). The Gaussian label-table margins of issue 13 (2026-12-02) changed the OTDD
#: case; they were recorded on AVX512 only (no AVX2 machine was at hand).
AWAITS_RECORDING: dict[str, set[str]] = {"AVX2": {"otdd-minibatch"}}


@pytest.mark.parametrize("name", sorted(cases()))
def test_same_bounds_to_the_bit(name):
    """``==`` against the table of this machine's CPU capability."""
    got = compute(cases()[name])
    cap, table = recorded()
    want = table[name]
    where = f"(capability {cap}; re-record with `python {__file__}` only for a change on purpose)"
    if name in AWAITS_RECORDING.get(cap, set()):
        rtol = CROSS_MACHINE_RTOL.get(name, CROSS_MACHINE_RTOL_DEFAULT)
        assert got["n_solves"] == want["n_solves"], (got, want, where)
        for k in ("lower", "upper"):
            assert abs(got[k] - want[k]) <= rtol * abs(want[k]), (k, got, want, where)
        return
    assert got["upper"] == want["upper"], (got, want, where)
    assert got["n_solves"] == want["n_solves"], (got, want, where)
    if want["lower"] is not None:  # lower="none" reports no lower bound (see OTResult)
        assert got["lower"] == want["lower"], (got, want, where)


@pytest.mark.parametrize("name", sorted(cases()))
def test_machines_tables_agree(name):
    """The two recorded tables are the same computation: equal solve counts, bounds within
    the stated cross-machine tolerance."""
    a, b = RECORDED_DEFAULT[name], RECORDED_AVX2[name]
    rtol = CROSS_MACHINE_RTOL.get(name, CROSS_MACHINE_RTOL_DEFAULT)
    assert a["n_solves"] == b["n_solves"]
    for k in ("lower", "upper"):
        if a[k] is None or b[k] is None:
            assert a[k] is b[k]
        else:
            assert abs(a[k] - b[k]) <= rtol * abs(a[k]), (k, a, b)


if __name__ == "__main__":  # record with the test-suite's threads: OMP_NUM_THREADS=1 (conftest)
    import torch

    torch.set_num_threads(1)
    json.dump({k: compute(v) for k, v in cases().items()}, sys.stdout, indent=1, sort_keys=True)
