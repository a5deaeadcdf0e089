"""Registry scaling benchmark (on demand): N = 2 ... 50 datasets, side by side in one run.

For each registry size N (digits-derived datasets of ``--n-points`` points, 64-d, 10 classes
or fewer), times, in this one process with threads pinned to 1:

- ``sliced`` pair by pair: the sliced screening estimate (:func:`otaudit.sliced_otdd`) for
  all N(N-1)/2 pairs (an estimate with a certified loose lower bound), and the same numbers
  from :func:`otaudit.sliced_matrix` (N per-dataset sketches of sorted projections, then one
  merge per pair);
- ``otdd_matrix``: the certified OTDD² matrix (Gaussian inner, exact outer LP at this size),
  N dataset passes + N(N-1)/2 pairs;
- ``pair-by-pair``: one :func:`otaudit.otdd` call per unordered pair (N <= ``--pairwise-max``);

and how well the screening ranks pairs against the certified values: Spearman rank
correlation over all pairs, and the recall of the K nearest pairs (K = 10 % of the pairs)
when the K, 2K or 4K nearest by the sliced estimate are kept (what ``screen: {keep: ...}``
does in an audit). Every sliced ``lower`` is checked to be <= the certified OTDD² (it is a
certified lower bound for the same lambdas).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_registry.py \
        [--sizes 2,5,10,20,50] [--n-points 1000] [--out FILE]

Prints the markdown; ``--out FILE`` also writes it there. There is no default file:
``RESULTS_registry.md`` holds hand-written readings and re-runs beside the generated table,
so a re-run is pasted in, not written over it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import otaudit  # noqa: E402
from otaudit.core.sliced import sliced_matrix, sliced_otdd  # noqa: E402
from otaudit.dataset_distance import otdd_matrix  # noqa: E402

torch.set_num_threads(1)


def _flip(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.flip(X.reshape(-1, 8, 8), 2).reshape(-1, 64))


def registry(N: int, n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """N digits-derived datasets with graded differences: bootstraps with growing noise,
    brightness shifts, mirrored images, class subsets (so distances vary and ranking
    matters)."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float64)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(N):
        kind = k % 5
        strength = 1 + k // 5
        pool = np.arange(len(X))
        if kind == 4:  # a class subset: 5 random classes
            pool = np.flatnonzero(np.isin(y, rng.choice(10, 5, replace=False)))
        i = rng.choice(pool, n, replace=True)
        A = X[i] + rng.normal(0.0, 0.5, (n, 64))
        if kind == 1:
            A = A + rng.normal(0.0, 0.5 * strength, (n, 64))
        elif kind == 2:
            A = A + 0.3 * strength
        elif kind == 3:
            A = _flip(A) if strength % 2 else A + rng.normal(0.0, 0.2 * strength, (64,))
        out.append((f"ds{k:02d}_{('boot', 'noise', 'bright', 'flip', 'subset')[kind]}", A, y[i]))
    return out


def _ranks(v: np.ndarray) -> np.ndarray:
    r = np.empty(len(v))
    r[np.argsort(v, kind="stable")] = np.arange(len(v))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_size(N: int, n: int, pairwise_max: int) -> dict[str, Any]:
    reg = registry(N, n)
    pairs = [(i, j) for i in range(N) for j in range(i + 1, N)]
    t0 = time.perf_counter()
    sl = {(i, j): sliced_otdd(reg[i][1], reg[i][2], reg[j][1], reg[j][2]) for i, j in pairs}
    t_sliced = time.perf_counter() - t0
    t0 = time.perf_counter()
    SM = sliced_matrix(reg)
    t_sketch = time.perf_counter() - t0
    sk_diff = max(abs(SM.values[p] - sl[p].value) / max(sl[p].value, 1e-300) for p in pairs)
    t0 = time.perf_counter()
    M = otdd_matrix(reg, inner="gaussian")
    t_matrix = time.perf_counter() - t0
    t_pairwise = None
    max_diff = None
    if N <= pairwise_max:
        t0 = time.perf_counter()
        pw = {
            (i, j): otaudit.otdd(reg[i][1], reg[i][2], reg[j][1], reg[j][2], inner="gaussian").value
            for i, j in pairs
        }
        t_pairwise = time.perf_counter() - t0
        max_diff = max(abs(pw[p] - M.values[p]) for p in pairs)
    est = np.array([sl[p].value for p in pairs])
    cert = np.array([M.values[p] for p in pairs])
    lows = np.array([sl[p].lower for p in pairs])
    # the sliced lower is certified; allow float64 round-off of the two computations
    lower_ok = bool(np.all(lows <= cert * (1 + 1e-9) + 1e-9))
    K = max(1, len(pairs) // 10)
    top_cert = set(np.argsort(cert, kind="stable")[:K].tolist())
    order_est = np.argsort(est, kind="stable")
    # recall of the K truly nearest pairs when screening keeps K, 2K or 4K pairs
    recall = [len(set(order_est[: f * K].tolist()) & top_cert) / K for f in (1, 2, 4)]
    return {
        "N": N,
        "pairs": len(pairs),
        "t_sliced": t_sliced,
        "t_sketch": t_sketch,
        "sk_diff": sk_diff,
        "t_matrix": t_matrix,
        "t_pairwise": t_pairwise,
        "max_diff": max_diff,
        "spearman": spearman(est, cert),
        "K": K,
        "recall": recall,
        "lower_ok": lower_ok,
        "peak": peak_gib(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2,5,10,20,50")
    ap.add_argument("--n-points", type=int, default=1000)
    ap.add_argument("--pairwise-max", type=int, default=10)
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    args = ap.parse_args()
    run_size(3, 200, 3)  # warm-up (first calls pay for lazy imports and allocations)
    rows = []
    for N in [int(s) for s in args.sizes.split(",")]:
        r = run_size(N, args.n_points, args.pairwise_max)
        rows.append(r)
        print(r, flush=True)
    cpu = platform.processor() or platform.machine()
    doc = [
        "# Registry scaling benchmark (N = number of datasets)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} cores visible, torch threads 1, "
        f"torch {torch.__version__}, otaudit {otaudit.__version__}; no GPU",
        f"- command: `python benchmarks/bench_registry.py --sizes {args.sizes} "
        f"--n-points {args.n_points}`",
        f"- data: N digits-derived datasets x {args.n_points} points, 64-d (bootstraps with "
        "growing noise, brightness shifts, mirrored images, 5-class subsets)",
        "",
        "| N | pairs | sliced pair by pair s | sliced_matrix s (sketches) "
        "| otdd_matrix s (Gaussian inner, certified) "
        "| pair-by-pair otdd s | matrix / pair-by-pair | sliced_matrix ms/pair | otdd_matrix ms/pair "
        "| Spearman(sliced, OTDD²) | recall of the K nearest when keeping K / 2K / 4K (K) "
        "| sliced lower <= OTDD² | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pw = "-" if r["t_pairwise"] is None else f"{r['t_pairwise']:.1f}"
        ratio = "-" if r["t_pairwise"] is None else f"{r['t_pairwise'] / r['t_matrix']:.2f}x"
        doc.append(
            f"| {r['N']} | {r['pairs']} | {r['t_sliced']:.1f} | {r['t_sketch']:.1f} "
            f"| {r['t_matrix']:.1f} | {pw} "
            f"| {ratio} | {1000 * r['t_sketch'] / r['pairs']:.0f} "
            f"| {1000 * r['t_matrix'] / r['pairs']:.0f} | {r['spearman']:.3f} "
            f"| {' / '.join(f'{v:.2f}' for v in r['recall'])} ({r['K']}) | {'yes' if r['lower_ok'] else 'NO'} "
            f"| {r['peak']:.2f} |"
        )
    doc += [
        "",
        "sliced_matrix entries vs sliced_otdd pair by pair: max relative difference "
        + f"{max(r['sk_diff'] for r in rows):.1e} (float64 round-off of the projections).",
        "",
        "Pair-by-pair values equal the matrix values (max abs diff "
        + ", ".join(f"{r['max_diff']:.1e}" for r in rows if r["max_diff"] is not None)
        + ").",
        "",
    ]
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(doc))
    print("\n".join(doc))


if __name__ == "__main__":
    main()
