"""Run the benchmarks of this folder in turn (on demand, not a test): ``make bench``.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only bounds,otdd,...] [--out DIR]

Every ``benchmarks/bench_*.py`` runs as its own process (threads pinned to 1), one after
the other, with its own defaults; each writes its ``RESULTS_*.md`` as documented in its
docstring. A benchmark that fails is reported and the others still run; the exit code is
the number of failures.

``--quick``: small sizes for every benchmark (a smoke run of minutes instead of hours on a
2-core machine), results written under ``--out`` (default: a fresh temporary directory)
so that the published ``RESULTS_*.md`` are never overwritten by a quick run. A benchmark
without a quick configuration below is listed as not run in quick mode (say how to run it
alone) rather than run at full size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Quick arguments per benchmark (``{out}``: the output directory of the quick run).
QUICK: dict[str, list[str]] = {
    "bounds": ["--cases", "digits", "--out", "{out}/RESULTS_bounds.md"],
    "otdd": ["--part", "registry", "--n-datasets", "3", "--n-points", "300", "--out", "{out}/RESULTS_otdd.md"],
    "pipeline": ["--n", "200", "--datasets", "3", "--workers", "1", "--json", "{out}/pipeline.json"],
    "registry": ["--sizes", "2,4", "--n-points", "200", "--pairwise-max", "4", "--out", "{out}/RESULTS_registry.md"],
    "scale": [
        "--sizes", "1000", "--big", "2000", "--exact-max", "1000", "--sinkhorn-sizes", "1024",
        "--out", "{out}/RESULTS_scale.md",
    ],
}  # fmt: skip


def benchmarks() -> dict[str, Path]:
    """``{name: path}`` of every ``bench_<name>.py`` here, sorted by name."""
    return {p.stem[len("bench_") :]: p for p in sorted(HERE.glob("bench_*.py"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, results under --out")
    ap.add_argument("--only", default="", help="comma list of names (bench_<name>.py)")
    ap.add_argument("--out", default=None, help="--quick: output directory")
    args = ap.parse_args(argv)
    found = benchmarks()
    names = [n for n in args.only.split(",") if n] or list(found)
    unknown = sorted(set(names) - set(found))
    if unknown:
        ap.error(f"no benchmark named {', '.join(unknown)} (have: {', '.join(found)})")
    out = args.out or (tempfile.mkdtemp(prefix="otaudit-bench-") if args.quick else None)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    failures = 0
    summary = []
    for name in names:
        if args.quick and name not in QUICK:
            summary.append(f"{name}: not run in quick mode (run: python {found[name]})")
            continue
        extra = [a.format(out=out) for a in QUICK[name]] if args.quick else []
        cmd = [sys.executable, str(found[name]), *extra]
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, cwd=HERE.parent).returncode
        dt = time.perf_counter() - t0
        failures += rc != 0
        summary.append(f"{name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {dt:.0f} s")
    print("\n".join(["", "== summary", *summary] + ([f"results under {out}"] if out else [])))
    return failures


if __name__ == "__main__":
    sys.exit(main())
