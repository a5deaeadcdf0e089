"""Scaling benchmark of the certified OT core and its baselines (issue 5, CPU parts).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py \
        [--sizes 1000,5000,20000,50000] [--big 200000] [--out benchmarks/RESULTS_scale.md]

Every case runs in its own subprocess (``python bench_scale.py --case NAME N``) so that its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the
interpreter + torch, ~0.3-0.4 GiB) belongs to that case alone. Threads: 1 (the machine is a
shared 2-core CPU; torch.set_num_threads(1)). Data: a clustered 32-d pair (16 Gaussian
clusters, Y = a convex gradient map of X, rows shuffled: the exact W2^2 is known in closed
form, so bounds are compared to it at every size). GPU figures are NOT measured here (no
GPU in this session); the code paths are device-agnostic torch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def brenier(n: int, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """X clustered, Y = grad phi(X) for a convex phi (quadratic + softplus), rows shuffled:
    the identity pairing is optimal, so W2^2 = mean ||x - grad phi(x)||^2 exactly."""
    rng = np.random.default_rng(seed)
    cx = rng.normal(size=(16, d)) * 3
    X = cx[rng.integers(0, 16, n)] + rng.normal(size=(n, d))
    Q = rng.normal(size=(d, d))
    A = Q @ Q.T / d + 0.5 * np.eye(d)
    Y = X @ A + 1 / (1 + np.exp(-X))
    w2 = float(np.mean(((X - Y) ** 2).sum(1)))
    return X, Y[rng.permutation(n)], w2


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_case(name: str, n: int) -> dict:
    import ot

    import otaudit
    from otaudit.core.costs import SqEuclidean, c_transform
    from otaudit.core.minibatch import sinkhorn_dual_ascent
    from otaudit.core.sliced import sliced_otdd

    out: dict = {"case": name, "n": n}
    if name.startswith("sinkhorn"):
        d = 64
        g = torch.Generator().manual_seed(0)
        X = torch.randn(n, d, generator=g)
        Y = torch.randn(n, d, generator=g) + 0.5
        la = torch.full((n,), -float(np.log(n)))
        eps = 1.0
        if name == "sinkhorn_dense":  # plain dense log-domain Sinkhorn, float32, [n, n] held
            C = torch.cdist(X, Y) ** 2
            f = torch.zeros(n)
            gg = torch.zeros(n)
            t = time.perf_counter()
            for _ in range(3):
                f = -eps * torch.logsumexp((gg[None, :] - C) / eps + la[None, :], dim=1)
                gg = -eps * torch.logsumexp((f[:, None] - C) / eps + la[:, None], dim=0)
            out["s_per_iter"] = (time.perf_counter() - t) / 3
        else:  # otaudit's online (blocked) Sinkhorn: float32 blocks recomputed by matmul
            cost = SqEuclidean(X.double(), Y.double())
            a = torch.full((n,), 1.0 / n, dtype=torch.float64)
            z = torch.zeros(n, dtype=torch.float64)
            t = time.perf_counter()
            sinkhorn_dual_ascent(cost, a, a, z, z, [eps], 3)
            out["s_per_iter"] = (time.perf_counter() - t) / 3
    elif name in ("ot_bounds", "classic", "exact_lp"):
        X, Y, w2 = brenier(n)
        out["ref"] = w2
        t = time.perf_counter()
        if name == "exact_lp":
            v = ot.emd2(np.ones(n) / n, np.ones(n) / n, ot.dist(X, Y), numItermax=10**9)
            out.update(lower=v, upper=v)
        elif name == "classic":
            # classic mini-batch averaging (an ESTIMATE, not a bound): the mean of exact OT
            # between `budget` random pairs of random 256-point batches
            rng = np.random.default_rng(1)
            budget = int(os.environ["BENCH_BUDGET"])
            u = np.ones(256) / 256
            vals = [
                ot.emd2(
                    u,
                    u,
                    ot.dist(
                        X[rng.choice(n, 256, replace=False)], Y[rng.choice(n, 256, replace=False)]
                    ),
                )
                for _ in range(budget)
            ]
            out.update(estimate=float(np.mean(vals)), solves=budget)
        else:
            kw = dict(batch_size=256, partition="aligned", coupling="diagonal", refine=3)
            r = otaudit.ot_bounds(X, Y, **kw)
            out.update(lower=r.lower, upper=r.upper, solves=r.n_solves)
        out["seconds"] = time.perf_counter() - t
    elif name == "sliced_otdd":
        X, Y, w2 = brenier(n)
        lab = np.arange(n) % 10
        t = time.perf_counter()
        r = sliced_otdd(X, lab, Y, lab)
        out.update(value=r.value, lower=r.lower, seconds=time.perf_counter() - t)
    elif name == "c_transform":  # memory-bounded pass: 5 000 x n, fast certified path
        X, Y, _ = brenier(n)
        cost = SqEuclidean(torch.from_numpy(X[:5000]), torch.from_numpy(Y))
        t = time.perf_counter()
        c_transform(cost, torch.zeros(n, dtype=torch.float64), side="y", fast=True)
        out["seconds"] = time.perf_counter() - t
    out["peak_gib"] = peak_gib()
    return out


def sub(name: str, n: int, env: dict | None = None, timeout: int = 1800) -> dict:
    cmd = [sys.executable, __file__, "--case", name, str(n)]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit code {p.returncode} (killed?)"])[-1]
        return {"case": name, "n": n, "error": last}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs=2)
    ap.add_argument("--sizes", default="1000,5000,20000,50000")
    ap.add_argument("--big", type=int, default=200_000)
    ap.add_argument("--exact-max", type=int, default=5000)
    ap.add_argument("--sinkhorn-sizes", default="4096,8192,16384")
    ap.add_argument("--out", default="benchmarks/RESULTS_scale.md")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    L = [
        f"# Scaling benchmark ({datetime.date.today()})",
        "",
        f"Machine: {os.cpu_count()}-core CPU, Python {platform.python_version()}, torch "
        f"{torch.__version__}; torch threads = 1 per case (shared machine: timings under "
        "contention with other jobs). Peak memory = ru_maxrss of the case's own subprocess "
        "(includes ~0.3-0.4 GiB of interpreter + torch + POT). GPU: not measured (no GPU in "
        "this session; the code is device-agnostic torch).",
        "",
        "## Certified bounds vs exact LP vs classic mini-batch averaging "
        "(Brenier 32-d, closed-form W2^2)",
        "",
        "| n = m | method | lower vs ref % | upper vs ref % | width % | solves | seconds | "
        "peak GiB |",
        "|" + "---|" * 8,
    ]
    for n in sizes:
        rb = sub("ot_bounds", n)
        rows = [("ot_bounds (aligned, diagonal, refine=3)", rb)]
        if "solves" in rb:
            rows.append(
                (
                    "classic mini-batch averaging, same budget (estimate, not a bound)",
                    sub("classic", n, {"BENCH_BUDGET": str(rb["solves"])}),
                )
            )
        if n <= args.exact_max:
            rows.append(("POT exact LP (ot.emd2)", sub("exact_lp", n)))
        for label, r in rows:
            if "error" in r:
                L.append(f"| {n} | {label} | error: {r['error']} |" + " |" * 5)
            elif "estimate" in r:
                e = (r["estimate"] / r["ref"] - 1) * 100
                L.append(
                    f"| {n} | {label} | estimate {e:+.3f} | - | - | {r['solves']} | "
                    f"{r['seconds']:.1f} | {r['peak_gib']:.2f} |"
                )
            else:
                ref = r["ref"]
                lo, up = r["lower"], r["upper"]
                L.append(
                    f"| {n} | {label} | {(lo / ref - 1) * 100:+.3f} | {(up / ref - 1) * 100:+.3f}"
                    f" | {(up - lo) / up * 100:.3f} | {r.get('solves', '-')} | "
                    f"{r['seconds']:.1f} | {r['peak_gib']:.2f} |"
                )
            print(L[-1], flush=True)
    L += [
        "",
        "## Near-linear / memory-bounded paths",
        "",
        "| n | path | seconds | peak GiB |",
        "|---|---|---|---|",
    ]
    for n in sorted(set(sizes + [args.big])):
        r = sub("sliced_otdd", n)
        L.append(
            f"| {n} | sliced_otdd (estimate; lower certified) | {r['seconds']:.2f} | "
            f"{r['peak_gib']:.2f} |"
        )
        print(L[-1], flush=True)
    r = sub("c_transform", args.big)
    L.append(
        f"| 5000 x {args.big} | c_transform fast (certified, exact in float64) | "
        f"{r['seconds']:.1f} | {r['peak_gib']:.2f} |"
    )
    print(L[-1], flush=True)
    L += [
        "",
        "## Sinkhorn per-iteration time, d = 64, float32",
        "",
        "| n = m | dense torch (C held) s/iter | online blocked (otaudit) s/iter | ratio | "
        "dense peak GiB | online peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for n in [int(s) for s in args.sinkhorn_sizes.split(",")]:
        dn = sub("sinkhorn_dense", n)
        on = sub("sinkhorn_online", n)
        if "error" in dn:
            L.append(
                f"| {n} | error: {dn['error']} | {on['s_per_iter']:.3f} | - | - | "
                f"{on['peak_gib']:.2f} |"
            )
        else:
            L.append(
                f"| {n} | {dn['s_per_iter']:.3f} | {on['s_per_iter']:.3f} | "
                f"{on['s_per_iter'] / dn['s_per_iter']:.2f} | {dn['peak_gib']:.2f} | "
                f"{on['peak_gib']:.2f} |"
            )
        print(L[-1], flush=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
