"""Shard-parallel embedding of ONE big dataset on a Dask LocalCluster (issue 14, item 3).

``run_embed_case(n_workers, n_rows=1_000_000, n_shards=32, dim=64) -> dict`` writes a
``n_shards``-row-group Parquet dataset, embeds it with a TorchScript MLP (64 -> hidden ->
hidden -> dim, so per-row compute, not I/O, dominates) twice:

* **single task** (today's path): one Dask task on one worker that runs
  :func:`otaudit.data.embedding.embed_dataset_sharded` with ``executor=None`` — every shard
  read and embedded one after another in that task;
* **shard-parallel**: one coarse task that secedes (:func:`otaudit.tasks.datasets.
  shard_executor`) and submits one Dask task per shard to the ``n_workers`` workers,

each into its own fresh cache, and reports the speed-up, whether the two caches hold the same
keys and bytes, the number of Dask tasks, bytes moved between workers (Dask's transfer log:
shard results are small, features travel through the cache store) and peak RSS per worker.
Used by ``benchmarks/bench_cluster.py --case embed``; alone:
``python benchmarks/cluster_embed.py --workers 1 2 --rows 200000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")


def _write_dataset(root: Path, n_rows: int, n_shards: int, d_in: int) -> str:
    from otaudit.data.parquet import write_dataset_parquet

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_rows, d_in)).astype(np.float32)
    y = rng.integers(0, 10, size=n_rows)
    return write_dataset_parquet(str(root), "big", X, y, row_group_size=-(-n_rows // n_shards))


def _model(root: Path, d_in: int, hidden: int, dim: int) -> str:
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(d_in, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(), torch.nn.Linear(hidden, dim),
    )  # fmt: skip
    path = str(root / "mlp.pt")
    torch.jit.save(torch.jit.script(mlp.eval()), path)
    return path


def _embed(spec: Any, cache_uri: str, parallel: bool) -> dict[str, Any]:
    """The per-dataset task's body, as one Dask task."""
    import resource

    from otaudit.data.cache import Cache
    from otaudit.data.embedding import embed_dataset_sharded
    from otaudit.data.readers import inspect_dataset
    from otaudit.data.storage import Store
    from otaudit.tasks.datasets import shard_executor

    info = inspect_dataset(spec)
    cache = Cache(Store(cache_uri))
    t0 = time.perf_counter()
    if parallel:
        with shard_executor() as ex:
            e = embed_dataset_sharded(
                spec, None, None, cache, spec.embedder.id, info.fingerprint, executor=ex
            )
    else:
        e = embed_dataset_sharded(spec, None, None, cache, spec.embedder.id, info.fingerprint)
    return {
        "seconds": time.perf_counter() - t0,
        "n_embedded": e.n_embedded,
        "keys": list(e.keys),
        "X_sha": __import__("hashlib").sha256(e.X.tobytes()).hexdigest(),
        "rss_coarse": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


_WARM = ("otaudit.data.embedders", "otaudit.data.embedding", "otaudit.dataset_distance.stats")


def _worker_peak(dask_worker: Any) -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _transfer_bytes(dask_worker: Any) -> int:
    return int(sum(t.get("total", 0) for t in dask_worker.transfer_incoming_log))


def _cache_digest(cache_uri: str, keys: list[str]) -> list[str]:
    import hashlib

    from otaudit.data.cache import Cache
    from otaudit.data.embedding import SHARD_KIND
    from otaudit.data.storage import Store

    cache = Cache(Store(cache_uri))
    out = []
    for k in keys:
        a = cache.get_arrays(SHARD_KIND, k)
        out.append(hashlib.sha256(a["X"].tobytes() + np.asarray(a["y"]).tobytes()).hexdigest())
    return out


def run_embed_case(
    n_workers: int,
    n_rows: int = 1_000_000,
    n_shards: int = 32,
    dim: int = 64,
    *,
    d_in: int = 64,
    hidden: int = 256,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Single-task vs shard-parallel embedding of one dataset on ``n_workers`` single-thread
    workers; see the module docstring for what is measured."""
    import cloudpickle
    from distributed import Client, LocalCluster

    from otaudit.data.manifest import DatasetSpec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tmp = Path(workdir or tempfile.mkdtemp(prefix="cluster_embed_"))
    uri = _write_dataset(tmp, n_rows, n_shards, d_in)
    spec = DatasetSpec.model_validate(
        {
            "name": "big",
            "uri": uri,
            "label": "label",
            "embedder": {"kind": "torchscript", "path": _model(tmp, d_in, hidden, dim),
                         "device": "cpu", "rows_per_batch": 8192},
        }
    )  # fmt: skip
    env = {v: "1" for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env,
        ) as cluster,
        Client(cluster) as client,
    ):
        # warm imports on every worker (torch; the shard task's moments import POT via
        # otaudit.dataset_distance): a long-lived worker pays them once, not per dataset
        client.run(lambda: [__import__(m) for m in _WARM])
        serial = client.submit(_embed, spec, str(tmp / "c_serial"), False, pure=False).result()
        before = sum(client.run(_transfer_bytes).values())
        t0 = time.perf_counter()
        par = client.submit(_embed, spec, str(tmp / "c_par"), True, pure=False).result()
        wall = time.perf_counter() - t0
        moved = sum(client.run(_transfer_bytes).values()) - before
        peaks = client.run(_worker_peak)
    store_bytes = sum(f.stat().st_size for f in (tmp / "c_par").rglob("*.npz"))
    same_keys = serial["keys"] == par["keys"]
    same_bytes = same_keys and _cache_digest(str(tmp / "c_serial"), serial["keys"]) == (
        _cache_digest(str(tmp / "c_par"), par["keys"])
    )
    return {
        "case": "embed",
        "n_workers": n_workers,
        "n_rows": n_rows,
        "n_shards": n_shards,
        "dim": dim,
        "model": f"torchscript MLP {d_in}->{hidden}->{hidden}->{dim}",
        "single_task_s": serial["seconds"],
        "parallel_s": par["seconds"],
        "parallel_wall_s": wall,
        "speedup": serial["seconds"] / par["seconds"],
        "identical_cache": bool(same_bytes),
        "identical_gathered": serial["X_sha"] == par["X_sha"],
        "dask_tasks": 1 + n_shards,
        "bytes_moved_between_workers": int(moved),  # Dask peer transfers (results are tiny)
        "bytes_through_cache_store": int(store_bytes),  # shard entries + the gathered read
        "peak_rss_per_worker": {str(k): int(v) for k, v in peaks.items()},
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=32)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    a = p.parse_args(argv)
    for w in a.workers:
        r = run_embed_case(w, a.rows, a.shards, a.dim, hidden=a.hidden)
        print(json.dumps(r, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
