"""OTDD flow benchmark (on demand): ``otaudit.otdd_flow`` against the same number of plain
``otaudit.otdd`` solves.

A labelled flow of ``K`` steps does ``K + 3`` OTDD solves (one at each of ``k = 0..K``, two
for the residual: the projections along the OTDD plan and along the class-respecting plan).
The baseline calls ``otaudit.otdd`` on the same number of point sets (the flow's own
trajectory, and its projection along ``pi_0`` twice), so both sides solve problems of the
same size; the overhead is what the flow adds (barycentric maps, plan bookkeeping, the
class-level LP and inner plans of the class-respecting plan, class table, feature shares). Runs alternate flow / baseline ``--repeat`` times; the table gives
the minimum of each (the machine is shared) and checks that the values agree.

Data: a Gaussian mixture (``--classes`` balanced classes, ``d`` dimensions) and a drifted
copy (every class mean shifted by 0.5, a rotation of 0.3 rad in two coordinates, noise sd 1.2
instead of 1): a covariate shift, so the residual should be near 0.

Threads are pinned to 1 (2-core machines; oversubscription distorts timings).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_flow.py --n 2000 --steps 5 \
        [--solver auto|minibatch] [--repeat 2] [--out benchmarks/RESULTS_flow.md]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import otaudit  # noqa: E402

torch.set_num_threads(1)


def make_pair(n: int, d: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(classes, d)) * 4.0
    ya = rng.permutation(np.arange(n) % classes)  # balanced classes: a covariate shift
    Xa = mu[ya] + rng.normal(size=(n, d))
    yb = rng.permutation(np.arange(n) % classes)
    th = 0.3
    R = np.eye(d)
    R[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
    Xb = (mu[yb] + 0.5) @ R.T + 1.2 * rng.normal(size=(n, d))
    return Xa, ya, Xb, yb


def demo_pair(a: str, b: str):
    """Two vendors of ``otaudit demo`` (sklearn digits, 64 features, 10 classes)."""
    from otaudit.app.demo import demo_datasets

    D = demo_datasets()
    (Xa, ya), (Xb, yb) = D[a], D[b]
    return Xa.astype(np.float64), ya, Xb.astype(np.float64), yb


def projection(X: np.ndarray, Y: np.ndarray, plan) -> np.ndarray:
    rows, cols, mass = plan
    n = X.shape[0]
    den = np.bincount(rows, mass, n)
    num = np.zeros_like(X)
    np.add.at(num, rows, mass[:, None] * Y[cols])
    T = num / den[:, None]
    one = np.bincount(rows, minlength=n)[rows] == 1
    T[rows[one]] = Y[cols[one]]
    return T


def run(
    n: int,
    d: int,
    classes: int,
    steps: int,
    solver: str,
    repeat: int,
    tau: float,
    data: str = "gauss",
):
    if data == "gauss":
        Xa, ya, Xb, yb = make_pair(n, d, classes)
    else:  # "demo:vendor_b:vendor_missing"
        _, a, b = data.split(":")
        Xa, ya, Xb, yb = demo_pair(a, b)
        n, d, classes = len(Xa), Xa.shape[1], len(set(ya.tolist()))
    opts = {"solver": solver}
    t_flow, t_base = [], []
    r = None
    base_vals: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = otaudit.otdd_flow(
            Xa, ya, Xb, yb, steps=steps, step_size=tau, trajectory_sample=None, **opts
        )
        t_flow.append(time.perf_counter() - t0)
        sets = [r.trajectory[k] for k in range(steps + 1)]
        # the residual solves: along pi_0 (compared below) and along the class-respecting
        # plan (the baseline solves the pi_0 projection again: a problem of the same size)
        sets += [projection(Xa, Xb, r.plan)] * len(r.residuals)
        t0 = time.perf_counter()
        base = [otaudit.otdd(S, ya, Xb, yb, **opts) for S in sets]
        t_base.append(time.perf_counter() - t0)
    assert r is not None
    flow_vals = list(r.values) + [r.residuals["otdd"] * r.values[0]]
    base_vals = [b.value for b in base][: len(flow_vals)]
    # differences relative to OTDD²_0 (the values decay toward 0, where relative differences
    # of two certified estimates mean nothing)
    scale = max(abs(base_vals[0]), 1e-300)
    rel = max(abs(a - b) / scale for a, b in zip(flow_vals, base_vals, strict=True))
    # certified brackets of the flow and of otdd (mini-batch: different estimates of the same
    # OTDD², so their intervals must intersect)
    overlap = all(
        max(lo, b.lower) <= min(up, b.upper) * (1 + 1e-12)
        for lo, up, b in zip(r.lower, r.upper, base[: steps + 1], strict=True)
    )
    tf, tb = min(t_flow), min(t_base)
    return {
        "data": data if data == "gauss" else data.split(":", 1)[1].replace(":", " → "),
        "m": len(Xb),
        "n": n,
        "d": d,
        "classes": classes,
        "steps": steps,
        "solver": solver,
        "kind": r.params["solver"],
        "solves": len(sets),
        "t_flow": tf,
        "t_base": tb,
        "overhead": tf / tb - 1.0,
        "rel": rel,
        "overlap": overlap,
        "ratio_last": float(r.ratios[-1]),
        "residual": r.residual,
        "t_flow_all": t_flow,
        "t_base_all": t_base,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[2000])
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--step-size", type=float, default=0.5)
    ap.add_argument("--solver", nargs="+", default=["auto"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--data",
        default="gauss",
        help="gauss (the mixture above) or demo:A:B (two `otaudit demo` vendors; --n ignored)",
    )
    a = ap.parse_args()
    rows = []
    for n in a.n:
        for s in a.solver:
            res = run(n, a.d, a.classes, a.steps, s, a.repeat, a.step_size, a.data)
            print(res, flush=True)
            rows.append(res)
    lines = [
        "| data | n x m | d | classes | steps | solver (picked) | OTDD solves | otdd_flow s "
        "| same number of otdd s | overhead | max diff of values / OTDD²_0 | brackets intersect "
        "| OTDD²_K/OTDD²_0 | residual |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['n']}x{r['m']} | {r['d']} | {r['classes']} | {r['steps']} "
            f"| {r['solver']} "
            f"({r['kind']}) | {r['solves']} | {r['t_flow']:.2f} | {r['t_base']:.2f} "
            f"| {100 * r['overhead']:+.1f} % | {r['rel']:.1e} | {'yes' if r['overlap'] else 'NO'} "
            f"| {r['ratio_last']:.4f} "
            f"| {r['residual']:.4f} |"
        )
    table = "\n".join(lines)
    print(table)
    if a.out:
        head = (
            f"\n## Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
            f"- machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores visible (shared), threads pinned to 1\n"
            f"- otaudit {otaudit.__version__}, torch {torch.__version__}\n"
            f"- command: `python benchmarks/bench_flow.py --n {' '.join(map(str, a.n))} "
            f"--d {a.d} --classes {a.classes} --steps {a.steps} --step-size {a.step_size} "
            f"--solver {' '.join(a.solver)} --repeat {a.repeat} --data {a.data}`\n"
            f"- times: min over {a.repeat} alternating runs; all runs: "
            + "; ".join(
                f"n={r['n']} {r['solver']}: flow {[round(t, 2) for t in r['t_flow_all']]}, "
                f"otdd {[round(t, 2) for t in r['t_base_all']]}"
                for r in rows
            )
            + "\n\n"
        )
        with open(a.out, "a") as fh:
            fh.write(head + table + "\n")


if __name__ == "__main__":
    main()
