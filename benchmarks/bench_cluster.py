"""One big pair over every worker (issue 14): certified ``ot_bounds`` on a Dask LocalCluster
of 1 and of 2 single-thread worker processes, with ``executor=client.get_executor()``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cluster.py \
        [--case pair|embed|all] [--n 200000] [--d 32] [--workers 1,2] [--serial] \
        [--out benchmarks/RESULTS_cluster.json]

Per cluster size it reports: wall seconds, lower/upper (identical across sizes: asserted),
the speed-up over 1 worker, submitted tasks per kind (from Dask's task stream) with their
total and slowest compute seconds (the per-task costs docs/scaling.md models), bytes the
client sent (task arguments + scattered data, pickled sizes) and received (results), bytes
moved between workers (Dask's ``transfer_outgoing_bytes_total``), and the peak RSS of every
worker and of the client (which runs the sequential glue). ``--serial`` also runs
``executor=None`` in process and asserts the same numbers.

Data: the clustered 32-d Brenier pair of ``bench_scale.py`` (W2^2 known in closed form).
Knobs as the 200k run of RESULTS_scale.md: aligned partition, diagonal coupling, refine=3,
batch 256; ``target_gap=1.0`` (the mini-batch bounds only, no sparse rounds after them).

``--case embed`` calls ``benchmarks/cluster_embed.py::run_embed_case`` when that file exists
(the shard-parallel embedding case of issue 14).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import pickle
import resource
import sys
import time
from concurrent.futures import Executor
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

HERE = Path(__file__).resolve().parent
KW = dict(
    solver="minibatch",
    batch_size=256,
    partition="aligned",
    coupling="diagonal",
    refine=3,
    target_gap=1.0,
)


class Measured(Executor):
    """Dask's ClientExecutor, counting the pickled bytes the client sends (task arguments,
    data scattered once per worker) and receives (results)."""

    def __init__(self, client):
        self._inner = client.get_executor()
        self._client = client
        self.n_workers = sum(client.nthreads().values())
        self.sent = 0
        self.scattered = 0
        self.received = 0
        self.tasks = 0

    def share(self, obj):
        self.scattered += len(pickle.dumps(obj, protocol=5)) * self.n_workers
        return self._client.scatter(obj, broadcast=True, hash=False)

    def submit(self, fn, *args, **kwargs):
        self.sent += len(pickle.dumps(args, protocol=5))  # handles of shared data are small
        self.tasks += 1
        fut = self._inner.submit(fn, *args, **kwargs)
        fut.add_done_callback(self._count)
        return fut

    def _count(self, fut) -> None:
        if fut.exception() is None:
            self.received += len(pickle.dumps(fut.result(), protocol=5))


def _worker_stats(dask_worker) -> dict:
    return {
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "transfer_out_bytes": int(getattr(dask_worker, "transfer_outgoing_bytes_total", 0)),
    }


def _stream_summary(data: list[dict]) -> dict:
    """Tasks per function: count, total and slowest compute seconds."""
    out: dict[str, dict] = {}
    for t in data:
        key = t["key"] if isinstance(t["key"], str) else str(t["key"])
        name = key.rsplit("-", 1)[0]
        comp = [s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute"]
        e = out.setdefault(name, {"tasks": 0, "compute_s": 0.0, "max_s": 0.0})
        e["tasks"] += 1
        e["compute_s"] += sum(comp)
        e["max_s"] = max(e["max_s"], max(comp, default=0.0))
    return out


def pair_case(n: int, d: int, workers: list[int], serial: bool) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_scale import brenier
    from distributed import Client, LocalCluster, get_task_stream

    import otaudit

    X, Y, w2 = brenier(n, d)
    res: dict = {"case": "pair", "n": n, "d": d, "knobs": KW, "w2_closed_form": w2, "runs": []}
    if serial:
        t = time.perf_counter()
        r = otaudit.ot_bounds(X, Y, **KW)
        res["serial"] = {"seconds": time.perf_counter() - t, "lower": r.lower, "upper": r.upper}
    env = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    for w in workers:
        with (
            LocalCluster(
                n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None, env=env
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(importlib.import_module, "otaudit.core.minibatch")  # warm, untimed
            ex = Measured(client)
            load0 = os.getloadavg()
            t = time.perf_counter()
            with get_task_stream(client) as ts:
                r = otaudit.ot_bounds(X, Y, executor=ex, **KW)
            sec = time.perf_counter() - t
            run = {
                "workers": w,
                "seconds": sec,
                "lower": r.lower,
                "upper": r.upper,
                "gap_rel": (r.upper - r.lower) / r.upper,
                "n_solves": r.n_solves,
                "tasks": ex.tasks,
                "bytes_sent": ex.sent,
                "bytes_scattered": ex.scattered,
                "bytes_received": ex.received,
                "per_function": _stream_summary(ts.data),
                "workers_stats": client.run(_worker_stats),
                "client_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "loadavg_before": load0,
                "loadavg_after": os.getloadavg(),
            }
            res["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "per_function"}), flush=True)
    base = res["runs"][0]
    for run in res["runs"]:
        run["speedup_vs_first"] = base["seconds"] / run["seconds"]
        assert (run["lower"], run["upper"]) == (base["lower"], base["upper"]), "not identical"
    if serial:
        assert (res["serial"]["lower"], res["serial"]["upper"]) == (base["lower"], base["upper"])
    return res


def embed_case(args: argparse.Namespace) -> dict:
    path = HERE / "cluster_embed.py"
    if not path.exists():
        return {"case": "embed", "skipped": "benchmarks/cluster_embed.py does not exist"}
    spec = importlib.util.spec_from_file_location("cluster_embed", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    fn = mod.run_embed_case
    offered = {"workers": args.workers, "n_rows": args.embed_rows, "out": args.out}
    takes = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in offered.items() if k in takes})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=["pair", "embed", "all"], default="pair")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--serial", action="store_true")
    p.add_argument("--embed-rows", type=int, default=1_000_000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    results = []
    if args.case in ("pair", "all"):
        results.append(pair_case(args.n, args.d, args.workers, args.serial))
    if args.case in ("embed", "all"):
        results.append(embed_case(args))
    text = json.dumps(results, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
