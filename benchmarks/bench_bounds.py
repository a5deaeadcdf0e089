"""Benchmark of the certified OT bounds (run on demand, not a test).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_bounds.py [--cases digits,clustered32,
        gauss2,gauss10,big50k] [--out benchmarks/RESULTS_bounds.md]
        [--block-solvers exact,sinkhorn --couplings aligned/optimal,random/optimal]
        [--target-gap inf]

Threads pinned to 1. For each case: exact LP time (ot.emd2, numItermax=1e9) where it can
run, then each partition/coupling/budget: lower, upper, width %, solves, seconds — next to
classic mini-batch averaging (random partition, independent coupling) at the same budget.
``--block-solvers exact,sinkhorn`` runs each configuration with both block solvers of
``minibatch_bounds`` side by side (POT's LP one block at a time vs batched Sinkhorn
launches; the latter is the GPU path, timed here on the CPU).
``big50k`` (50 000 vs 50 000, 32-d, Brenier closed form) takes several minutes.
``--target-gap``: passed to ``ot_bounds`` (default: its own, ``config.TARGET_GAP``: sparse
exact rounds follow the mini-batch bounds until the width is met, issue 12); ``inf`` gives
the mini-batch bounds alone, as every round recorded before issue 12.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import ot  # noqa: E402
import torch  # noqa: E402

import otaudit  # noqa: E402

torch.set_num_threads(1)


def cases(names: list[str]):
    rng = np.random.default_rng(0)
    if "digits" in names:
        from sklearn.datasets import load_digits

        D = load_digits().data.astype(float)
        p = rng.permutation(len(D))
        yield "digits halves 64-d", D[p[:898]], D[p[898:]], None
    if "clustered32" in names:
        cx = rng.normal(size=(8, 32)) * 4
        cy = cx + rng.normal(size=(8, 32))
        X = cx[rng.integers(0, 8, 6000)] + rng.normal(size=(6000, 32))
        Y = cy[rng.choice(8, 6000, p=np.r_[0.3, np.full(7, 0.1)])] + rng.normal(size=(6000, 32))
        yield "clustered 32-d 6000 vs 6000", X, Y, None
    if "gauss2" in names:
        yield (
            "gauss 2-d 3000 vs 2500",
            rng.normal(size=(3000, 2)),
            rng.normal(size=(2500, 2)) * [2, 0.5] + 1,
            None,
        )
    if "gauss10" in names:
        yield (
            "gauss 10-d 3000 vs 3000",
            rng.normal(size=(3000, 10)),
            rng.normal(size=(3000, 10)) * 1.5 + 0.3,
            None,
        )
    if "big50k" in names:
        n, d = 50_000, 32
        cx = rng.normal(size=(16, d)) * 3
        X = cx[rng.integers(0, 16, n)] + rng.normal(size=(n, d))
        Q = rng.normal(size=(d, d))
        A = Q @ Q.T / d + 0.5 * np.eye(d)
        Y = X @ A + 1 / (1 + np.exp(-X))  # grad of a convex phi: identity pairing optimal
        w2 = float(np.mean(((X - Y) ** 2).sum(1)))
        yield "Brenier 32-d 50000 vs 50000 (closed form)", X, Y[rng.permutation(n)], w2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="digits,clustered32,gauss2,gauss10")
    ap.add_argument("--out", default="benchmarks/RESULTS_bounds.md")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--block-solvers", default="exact")
    ap.add_argument("--couplings", default="", help="e.g. aligned/optimal,random/diagonal")
    ap.add_argument("--target-gap", type=float, default=None, help="inf: mini-batch bounds only")
    args = ap.parse_args()
    anytime = {} if args.target_gap is None else {"target_gap": args.target_gap}
    solvers = args.block_solvers.split(",")
    names = args.cases.split(",")
    cpu = (
        subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True)
        .stdout.split(":")[-1]
        .strip()
    )
    lines = [
        f"# Certified OT bounds benchmark ({datetime.date.today()})",
        "",
        f"Machine: {os.cpu_count()}-core CPU ({cpu}), {platform.python_version()}, "
        f"torch {torch.__version__}, POT {ot.__version__}; threads pinned to 1; the "
        "machine was shared with other jobs (timings under contention); "
        f"target_gap {anytime.get('target_gap', 'default')}.",
        "",
    ]
    for title, X, Y, closed in cases(names):
        n, m = len(X), len(Y)
        print(title, flush=True)
        if closed is None:
            t = time.perf_counter()
            ex = ot.emd2(np.ones(n) / n, np.ones(m) / m, ot.dist(X, Y), numItermax=10**9)
            t_ex = time.perf_counter() - t
            ref = f"exact LP {ex:.6g} in {t_ex:.1f} s"
        else:
            ex, ref = closed, f"closed form {closed:.6g} (exact LP cannot run)"
        lines += [
            f"## {title}",
            "",
            ref,
            "",
            "| partition | coupling | block solver | budget | lower | upper | lower vs ref % | "
            "upper vs ref % | width % | solves | seconds |",
            "|" + "---|" * 11,
        ]
        configs = [
            ("aligned", "diagonal", None, {}),
            ("random", "diagonal", None, {}),
            ("aligned", "optimal", None, {}),
            ("random", "optimal", None, {}),
            ("aligned", "diagonal", 20, {}),
            ("random", "independent", 20, {"refine": 0}),
            ("random", "independent", None, {"refine": 0}),
        ]
        if n > 10_000:
            configs = [("aligned", "diagonal", None, {"refine": 3})]
        if args.couplings:
            configs = [(*pc.split("/"), None, {}) for pc in args.couplings.split(",")]
        for (part, coup, bud, kw), bsol in [(c, s) for c in configs for s in solvers]:
            r = otaudit.ot_bounds(
                X,
                Y,
                batch_size=args.batch_size,
                partition=part,
                coupling=coup,
                budget=bud,
                block_solver=bsol,
                **kw,
                **anytime,
            )
            tag = " (classic averaging)" if coup == "independent" else ""
            lines.append(
                f"| {part} | {coup}{tag} | {bsol} | {bud} | {r.lower:.6g} | {r.upper:.6g} | "
                f"{(r.lower / ex - 1) * 100:+.2f} | {(r.upper / ex - 1) * 100:+.2f} | "
                f"{r.gap_rel * 100:.2f} | {r.n_solves} | {r.seconds:.1f} |"
            )
            print(lines[-1], flush=True)
        lines.append("")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
