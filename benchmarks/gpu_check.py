"""One step of the GPU check (issue 14, item 4), run by ``benchmarks/gpu_check.sh``.

``python benchmarks/gpu_check.py STEP OUT_JSON [--smoke]`` measures one open GPU target and
writes one JSON record ``{"step", "status", "device", "seconds", "target", "met", ...}``.
With ``--smoke`` (or no CUDA device) it runs a tiny version of the same call on the CPU, so
the script is testable on CPU machines; those numbers say nothing about GPU performance.

Steps (full size on CUDA; targets from the issues):
  batched_blocks    ot_bounds(block_solver="sinkhorn") on 200k x 200k 64-d: block problems/s
  bounds_1m         1M x 1M 64-d certified bounds: gap_rel <= 2 % in < 60 s
  otdd_100k         100k x 100k OTDD (10 classes) certified within 1 % in < 10 s
  otdd_matrix       20 datasets x 10k rows, OTDD matrix in < 60 s
  sinkhorn_32k      one dense log-domain Sinkhorn iteration at 32768^2 (d=64), float32,
                    against its memory-bandwidth floor (read C twice per iteration)
  embed_throughput  TorchScript MLP 64 -> 512 -> 512 -> 64, rows/s on the GPU
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch


def _device(smoke: bool) -> torch.device:
    if smoke or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _clouds(n: int, d: int, dev: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    Y = torch.randn(n, d, generator=g) * 1.1 + 0.3
    return X.to(dev), Y.to(dev)


def _labelled(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    centers = rng.normal(size=(k, d)) * 3
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _result(r: Any) -> dict[str, Any]:
    return {
        "lower": float(r.lower),
        "upper": float(r.upper),
        "gap_rel": float(r.gap_rel),
        "method": str(getattr(r, "method", "")),
    }


def step_batched_blocks(smoke: bool) -> dict[str, Any]:
    import otaudit

    dev = _device(smoke)
    n, bs = (512, 128) if smoke else (200_000, 256)
    X, Y = _clouds(n, 64 if not smoke else 8, dev, 1)
    t0 = time.perf_counter()
    r = otaudit.ot_bounds(
        X,
        Y,
        solver="minibatch",
        batch_size=bs,
        block_solver="sinkhorn",
        time_limit=10 if smoke else 120,
    )
    _sync(dev)
    s = time.perf_counter() - t0
    extra = r.extra or {}
    solves = next((extra[k] for k in ("n_solves", "solves", "n_blocks") if k in extra), None)
    return {
        "seconds": s,
        "block_solves": solves,
        "block_problems_per_s": (float(solves) / s) if isinstance(solves, int | float) else None,
        "target": "block problems/s (ESTIMATE: ~3900/s batched 256^2 on H100)",
        "met": None,
        **_result(r),
    }


def step_bounds_1m(smoke: bool) -> dict[str, Any]:
    import otaudit

    dev = _device(smoke)
    n, d = (800, 4) if smoke else (1_000_000, 64)
    X, Y = _clouds(n, d, dev, 2)
    t0 = time.perf_counter()
    r = otaudit.ot_bounds(X, Y, solver="minibatch", target_gap=0.02, time_limit=10 if smoke else 60)
    _sync(dev)
    s = time.perf_counter() - t0
    res = _result(r)
    return {
        "seconds": s,
        "target": "gap_rel <= 2% in < 60 s",
        "met": bool(res["gap_rel"] <= 0.02 and s < 60),
        **res,
    }


def step_otdd_100k(smoke: bool) -> dict[str, Any]:
    import otaudit

    dev = _device(smoke)
    n, d = (600, 8) if smoke else (100_000, 64)
    X1, y1 = _labelled(n, d, 10, 3)
    X2, y2 = _labelled(n, d, 10, 4)
    X1t, X2t = torch.from_numpy(X1).to(dev), torch.from_numpy(X2).to(dev)
    t0 = time.perf_counter()
    r = otaudit.otdd(X1t, y1, X2t, y2, target_gap=0.01, time_limit=30)
    _sync(dev)
    s = time.perf_counter() - t0
    res = _result(r)
    return {
        "seconds": s,
        "target": "certified within 1% in < 10 s",
        "met": bool(res["gap_rel"] <= 0.01 and s < 10),
        **res,
    }


def step_otdd_matrix(smoke: bool) -> dict[str, Any]:
    from otaudit.dataset_distance import otdd_matrix

    dev = _device(smoke)
    N, n, d = (3, 300, 8) if smoke else (20, 10_000, 64)
    data = []
    for i in range(N):
        X, y = _labelled(n, d, 5, 10 + i)
        data.append((f"d{i}", torch.from_numpy(X).to(dev), y))
    t0 = time.perf_counter()
    M = otdd_matrix(data)
    _sync(dev)
    s = time.perf_counter() - t0
    D = np.asarray(M.distances)
    return {
        "seconds": s,
        "n_datasets": N,
        "rows": n,
        "finite": bool(np.isfinite(D).all()),
        "target": "20 x 10k OTDD matrix in < 60 s",
        "met": bool(s < 60) if not smoke else None,
    }


def step_sinkhorn_32k(smoke: bool) -> dict[str, Any]:
    from otaudit.core.sinkhorn import sinkhorn_log

    dev = _device(smoke)
    n, d = (512, 8) if smoke else (32_768, 64)
    X, Y = _clouds(n, d, dev, 5)
    C = torch.cdist(X, Y).pow_(2).unsqueeze(0).float()
    la = torch.full((1, n), -float(np.log(n)), device=dev)
    iters = 20 if smoke else 100
    sinkhorn_log(C, la, la, 0.05 * float(C.mean()), max_iter=5, tol=0.0, warn=False)  # warm up
    _sync(dev)
    t0 = time.perf_counter()
    sinkhorn_log(C, la, la, 0.05 * float(C.mean()), max_iter=iters, tol=0.0, warn=False)
    _sync(dev)
    per_iter = (time.perf_counter() - t0) / iters
    # floor: a dense iteration reads the n x m float32 cost twice (f then g update)
    bytes_per_iter = 2 * n * n * 4
    bw = 4.8e12  # H200 HBM3e peak (H100 SXM: 3.35e12); measured copy is ~60-70% of peak
    return {
        "seconds_per_iter": per_iter,
        "floor_seconds_per_iter": bytes_per_iter / bw,
        "ratio_to_floor": per_iter / (bytes_per_iter / bw),
        "target": "per-iteration time vs the bandwidth floor (issue: naive was ~15x)",
        "met": None,
    }


def step_embed_throughput(smoke: bool) -> dict[str, Any]:
    from otaudit.data.embedders import make_embedder

    dev = _device(smoke)
    rows = 20_000 if smoke else 4_000_000
    mlp = torch.nn.Sequential(
        torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 64),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.pt")
        torch.jit.save(torch.jit.script(mlp.eval()), path)
        emb = make_embedder(
            {"kind": "torchscript", "path": path, "device": dev.type, "rows_per_batch": 65536}
        )
        X = np.random.default_rng(0).normal(size=(rows, 64)).astype(np.float32)
        emb.embed(X[:1000])
        t0 = time.perf_counter()
        out = emb.embed(X)
        s = time.perf_counter() - t0
    flops = 2 * rows * (64 * 512 + 512 * 512 + 512 * 64)
    return {
        "seconds": s,
        "rows_per_s": rows / s,
        "gflops": flops / s / 1e9,
        "shape": list(out.shape),
        "target": "GPU embedding throughput (host <-> device copies included)",
        "met": None,
    }


STEPS = {
    name[len("step_") :]: fn for name, fn in dict(globals()).items() if name.startswith("step_")
}


def main(argv: list[str]) -> int:
    step, out = argv[0], argv[1]
    smoke = "--smoke" in argv or not torch.cuda.is_available()
    torch.manual_seed(0)
    rec: dict[str, Any] = {"step": step, "smoke": smoke, "device": str(_device(smoke))}
    t0 = time.perf_counter()
    try:
        rec.update(STEPS[step](smoke))
        rec["status"] = "ok"
        if smoke:
            rec["met"] = None  # a smoke run on the CPU measures nothing against GPU targets
    except Exception as e:  # noqa: BLE001 - recorded: one failing step must not stop the rest
        rec.update(status="error", error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    rec["wall_seconds"] = time.perf_counter() - t0
    if torch.cuda.is_available() and not smoke:
        rec["gpu"] = torch.cuda.get_device_name()
        rec["peak_gpu_bytes"] = int(torch.cuda.max_memory_allocated())
    with open(out, "w") as f:
        json.dump(rec, f, default=str)
    print(json.dumps(rec, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
