"""Pipeline overhead: a 10-dataset audit, total wall time vs the numerical work inside tasks.

Ten digits-derived datasets (sklearn digits, 64-d, ``--n`` points each, drawn with
replacement and perturbed differently per dataset) are written as Parquet to a local
directory store; the audit computes OTDD (exact) for all 45 pairs on a Dask LocalCluster
(``--workers`` x 1 thread) under a Prefect server.

Numerical work = what the tasks measure around the numerics: per dataset read + embed +
statistics (``datasets.parquet``), per pair the solver time (``pairs.parquet`` ``seconds``).
With ``T`` Dask threads the ideal wall time is ``work / T``; the overhead share is
``1 - (work / T) / wall``: Prefect task runs, Dask scheduling, cache and report I/O, load
imbalance. Three runs:

1. ``cold``: a fresh LocalCluster is started inside the flow (worker imports included);
2. ``warm``: an existing cluster (``--dask-address`` path), cache off: everything recomputed;
3. ``cached``: same cluster, cache on, nothing changed: pure orchestration cost.

Threads are pinned (OMP_NUM_THREADS=1, torch 1 thread); the Prefect server is started once
(its start time is reported separately).

    .venv/bin/python benchmarks/bench_pipeline.py [--n 1000] [--datasets 10] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import numpy as np  # noqa: E402


def make_registry(root: Path, n: int, k: int, seed: int = 0) -> Path:
    """``k`` digits-derived datasets of ``n`` points as Parquet, and their manifest."""
    from sklearn.datasets import load_digits

    from otaudit.data.readers import write_dataset_parquet

    d = load_digits()
    X, y = d.data.astype(np.float32), d.target
    rng = np.random.default_rng(seed)
    lines = [f"name: bench\noutput: {root / 'out'}\ndatasets:"]
    for i in range(k):
        idx = rng.choice(len(y), size=n, replace=True)
        Xi = X[idx] + rng.normal(0, 0.5 * i, size=(n, X.shape[1])).astype(np.float32)
        if i % 3 == 2:
            Xi = Xi.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64).copy()
        uri = write_dataset_parquet(str(root / "data"), f"ds{i:02d}", Xi, y[idx])
        lines.append(f"  - {{name: ds{i:02d}, uri: {uri}, features: features, label: label}}")
    lines.append("measures:\n  otdd: {inner: exact}\npairs: all\n")
    path = root / "manifest.yaml"
    path.write_text("\n".join(lines))
    return path


def work_of(uri: str) -> dict[str, float]:
    """Numerical seconds measured inside the tasks, from the written report."""
    from otaudit.audit.report import read_report

    rep = read_report(uri)
    ds = rep.dataset_rows()
    pairs = rep.pair_rows()
    return {
        # embed + statistics (+ read where a report has it; datasets.parquet does not: local
        # Parquet reads are ms here), not the task's whole ``seconds``: a task that submits
        # its shards to the cluster also waits there, and queueing is not work
        "datasets": sum(
            (r.get("read_seconds") or 0.0)
            + (r["embed_seconds"] or 0.0)
            + (r["stats_seconds"] or 0.0)
            for r in ds
            if not r["cache_hit"]
        ),
        "embed": sum((r["embed_seconds"] or 0.0) for r in ds),
        "stats": sum((r["stats_seconds"] or 0.0) for r in ds),
        "pairs": sum(r["seconds"] for r in pairs if not r["cached"]),
        "n_pairs": len(pairs),
        "cache_hits": sum(bool(r["cache_hit"]) for r in ds),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--datasets", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", type=str, default=None, help="write the results here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from distributed import LocalCluster

    from otaudit.audit.report import new_run_id
    from otaudit.config import load_settings
    from otaudit.flows.audit import audit
    from otaudit.flows.runtime import make_task_runner, prefect_api

    settings = load_settings(n_workers=args.workers, threads_per_worker=1)
    threads = args.workers
    root = Path(tempfile.mkdtemp(prefix="otaudit-bench-"))
    manifest = str(make_registry(root, args.n, args.datasets))
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    with prefect_api(settings) as url:
        server_s = time.perf_counter() - t0

        def run(name: str, runner, use_cache: bool) -> None:
            flow = audit.with_options(task_runner=runner)
            t = time.perf_counter()
            out = flow(
                manifest=manifest, run_id=new_run_id(), n_threads=threads, use_cache=use_cache
            )
            wall = time.perf_counter() - t
            w = work_of(out["uri"])
            work = w["datasets"] + w["pairs"]
            ideal = work / threads
            results[name] = {
                **w,
                "wall": wall,
                "work": work,
                "ideal_wall": ideal,
                "overhead_share": 1.0 - ideal / wall,
                "status": out["status"],
            }

        run("cold", make_task_runner(settings), use_cache=False)
        env = {"PREFECT_API_URL": url, "OMP_NUM_THREADS": "1"}
        with LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env,
        ) as cluster:
            warm_runner = make_task_runner(settings, address=cluster.scheduler_address)
            run("warm", warm_runner, use_cache=False)
            run("cached", warm_runner, use_cache=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "datasets": args.datasets, "n": args.n, "workers": args.workers,
        "prefect_server_start_s": server_s,
    }  # fmt: skip
    print(json.dumps(meta, indent=1))
    hdr = (f"{'run':7} {'wall s':>7} {'work s':>7} {'ideal s':>7} {'overhead':>8} "
           f"{'datasets s':>10} {'pairs s':>8} {'hits':>4}")  # fmt: skip
    print(hdr)
    for name, r in results.items():
        print(
            f"{name:7} {r['wall']:7.1f} {r['work']:7.1f} {r['ideal_wall']:7.1f} "
            f"{100 * r['overhead_share']:7.1f}% {r['datasets']:10.2f} {r['pairs']:8.2f} "
            f"{r['cache_hits']:4d}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
