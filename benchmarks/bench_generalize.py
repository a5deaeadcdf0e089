"""Certified bounds on data nobody tuned them for (issue 12; run on demand, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_generalize.py table \
        --sizes 1000,3000 [--families all] [--emd-max 3000] [--sinkhorn-max 3000]
    .venv/bin/python benchmarks/bench_generalize.py routes    # fits the route cost model
    .venv/bin/python benchmarks/bench_generalize.py solvers   # OR-Tools vs ot.emd vs HiGHS

``table``: every family of ``benchmarks/families.py`` (closed-form W2^2) at each size, on
**default settings** (``otaudit.ot_bounds(X, Y, a=, b=)``): certified width, time, whether
the truth is inside [lower, upper]; side by side in the same run POT's exact LP
(``ot.emd2``, costs rescaled by a power of two) where ``n <= --emd-max`` and POT Sinkhorn
(``ot.sinkhorn2``, reg = 1e-2 of the largest cost; its error against the truth, no
certificate) where ``n <= --sinkhorn-max``. Per size: median and worst width and time.
Threads pinned to 1; prints markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
torch.set_num_threads(1)

import otaudit  # noqa: E402
from benchmarks.families import FAMILIES, make  # noqa: E402
from otaudit.core.anytime import anytime_bounds  # noqa: E402
from otaudit.core.costs import SqEuclidean  # noqa: E402
from otaudit.core.sparse import SparseOT, solve_mcf  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (shared), torch/BLAS threads pinned to 1"


def weights(p):
    a = np.full(p.X.shape[0], 1 / p.X.shape[0]) if p.a is None else p.a
    b = np.full(p.Y.shape[0], 1 / p.Y.shape[0]) if p.b is None else p.b
    return a, b


def emd2(p) -> tuple[float, float]:
    t = time.perf_counter()
    C = ot.dist(p.X, p.Y)
    s = 2.0 ** -np.floor(np.log2(C.max()))
    a, b = weights(p)
    v = float(ot.emd2(a, b, C * s, numItermax=10**9)) / s
    return v, time.perf_counter() - t


def sinkhorn(p) -> tuple[float, float]:
    t = time.perf_counter()
    C = ot.dist(p.X, p.Y)
    a, b = weights(p)
    v = float(ot.sinkhorn2(a, b, C, reg=1e-2 * C.max(), numItermax=1000, stopThr=1e-9))
    return v, time.perf_counter() - t


def table(args) -> None:
    fams = list(FAMILIES) if args.families == "all" else args.families.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {machine()}\n")
    print(
        "| family | n | m | d | method | width % | truth inside | s | emd2 s | "
        "sinkhorn err % (no cert.) | sinkhorn s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    per_size: dict[int, list] = {}
    for n in sizes:
        for name in fams:
            p = make(name, n, seed=args.seed)
            t = time.perf_counter()
            r = otaudit.ot_bounds(p.X, p.Y, a=p.a, b=p.b)
            ts = time.perf_counter() - t
            tol = 1e-12 * p.truth
            inside = r.lower <= p.truth + tol and p.truth - tol <= r.upper
            te = sk_err = sk_t = None
            if n <= args.emd_max:
                _, te = emd2(p)
            if n <= args.sinkhorn_max:
                v, sk_t = sinkhorn(p)
                sk_err = 100 * (v - p.truth) / p.truth
            per_size.setdefault(n, []).append((100 * r.gap_rel, ts, te, inside))
            fmt = lambda x, f: "—" if x is None else format(x, f)  # noqa: E731
            print(
                f"| {name} | {n} | {p.Y.shape[0]} | {p.d} | {r.method} | {100 * r.gap_rel:.2e} "
                f"| {inside} | {ts:.2f} | {fmt(te, '.2f')} | {fmt(sk_err, '+.3f')} "
                f"| {fmt(sk_t, '.2f')} |",
                flush=True,
            )
    print(
        "\n| n | families | median width % | worst width % | median s | worst s | "
        "median (otaudit s / emd2 s) | worst (otaudit s / emd2 s) | truth inside |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, rows in per_size.items():
        w = [r[0] for r in rows]
        ts = [r[1] for r in rows]
        ratio = [r[1] / r[2] for r in rows if r[2]]
        print(
            f"| {n} | {len(rows)} | {statistics.median(w):.2e} | {max(w):.2e} | "
            f"{statistics.median(ts):.2f} | {max(ts):.2f} | "
            f"{(statistics.median(ratio) if ratio else float('nan')):.2f} | "
            f"{(max(ratio) if ratio else float('nan')):.2f} | {all(r[3] for r in rows)} |"
        )


def routes(args) -> None:
    """Times of the dense LP (exact_ot, what auto runs) and of the sparse route to optimality."""
    fams = (
        args.families.split(",")
        if args.families != "all"
        else ["gauss_affine", "clusters", "plane", "lowrank128"]
    )
    print(f"machine: {machine()}\n")
    print("| family | n | d | exact_ot s | ot.emd2 s | sparse s (to optimal) | sparse rounds |")
    print("|---|---|---|---|---|---|---|")
    for n in [int(s) for s in args.sizes.split(",")]:
        for name in fams:
            p = make(name, n, seed=args.seed)
            cost = SqEuclidean(torch.from_numpy(p.X), torch.from_numpy(p.Y))
            t = time.perf_counter()
            otaudit.solve_ot(cost, p.a, p.b, solver="exact")
            tx = time.perf_counter() - t
            _, te = emd2(p)
            t = time.perf_counter()
            r = anytime_bounds(cost, p.a, p.b, target_gap=0.0)
            tsp = time.perf_counter() - t
            print(
                f"| {name} | {n} | {p.d} | {tx:.3f} | {te:.3f} | {tsp:.3f} | "
                f"{len(r.extra['sparse_rounds'])} |",
                flush=True,
            )


def solvers(args) -> None:
    """The restricted (sparse) problem of the first round, solved by three LP solvers."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    print(f"machine: {machine()}\n")
    print(
        "| family | n | edges | OR-Tools MCF s | POT ot.emd (dense, excluded = 1e3 max) s | "
        "HiGHS linprog s | same optimum |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in [int(s) for s in args.sizes.split(",")]:
        p = make(args.families if args.families != "all" else "clusters", n, seed=args.seed)
        cost = SqEuclidean(torch.from_numpy(p.X), torch.from_numpy(p.Y))
        sp = SparseOT(cost)
        sp._first_edges()
        m = p.Y.shape[0]
        I, J, c = sp.keys // m, sp.keys % m, sp.c
        s = 2**40 / c.max()
        cint = np.rint(c * s).astype(np.int64)
        t = time.perf_counter()
        flow = solve_mcf(n, m, I, J, cint, sp.A, sp.B)
        t_or = time.perf_counter() - t
        v_or = float((flow / sp.S * c).sum())
        t = time.perf_counter()
        C = np.full((n, m), 1e3 * c.max())
        C[I, J] = c
        sc = 2.0 ** -np.floor(np.log2(C.max()))
        v_pot = float(ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), C * sc, numItermax=10**9)) / sc
        t_pot = time.perf_counter() - t
        t = time.perf_counter()
        E = len(I)
        rows = np.concatenate([I, n + J])
        cols = np.concatenate([np.arange(E), np.arange(E)])
        Aeq = coo_matrix((np.ones(2 * E), (rows, cols)), shape=(n + m, E)).tocsr()
        beq = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
        res = linprog(c, A_eq=Aeq, b_eq=beq, bounds=(0, None), method="highs")
        t_h = time.perf_counter() - t
        same = abs(v_or - v_pot) <= 1e-8 * v_or and abs(v_or - res.fun) <= 1e-7 * v_or
        print(
            f"| {p.name} | {n} | {E} | {t_or:.3f} | {t_pot:.3f} | {t_h:.3f} | {same} |", flush=True
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["table", "routes", "solvers"])
    ap.add_argument("--sizes", default="1000,3000")
    ap.add_argument("--families", default="all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--emd-max", type=int, default=3000)
    ap.add_argument("--sinkhorn-max", type=int, default=3000)
    args = ap.parse_args()
    {"table": table, "routes": routes, "solvers": solvers}[args.mode](args)


if __name__ == "__main__":
    main()
