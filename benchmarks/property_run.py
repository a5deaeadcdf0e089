"""Long on-demand run of the issue-13 property suite (not a test).

    nice .venv/bin/python benchmarks/property_run.py [--n 1200] [--max-n 40] [--seed 13]
        [--out benchmarks/property_run.json]

Draws ``--n`` configurations from the same Hypothesis strategy as
``tests/test_properties.py`` (families x scales x offsets x every solver and option, point
clouds up to ``--max-n`` per side), runs each against its independent oracle and records
every violation of ``lower <= exact <= upper`` (beyond the oracle's stated round-off)
instead of stopping at the first. Threads pinned to 1. Prints a summary per solver and
writes the violations (with their configurations) to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.test_properties import _fix, configs, run_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--max-n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="benchmarks/property_run.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seen: set[str] = set()
    counts: collections.Counter = collections.Counter()
    viol: list[dict] = []
    errors: list[dict] = []
    t0 = time.perf_counter()

    @seed(args.seed)
    @settings(
        max_examples=args.n,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(configs(args.max_n))
    def survey(c) -> None:
        c = _fix(c)
        key = json.dumps(dataclasses.asdict(c), sort_keys=True)
        if key in seen:
            return
        seen.add(key)
        tag = c.solver if c.solver != "minibatch" else f"minibatch[{c.partition},{c.coupling}]"
        if c.solver == "otdd":
            tag = f"otdd[{c.inner}]"
        counts[tag] += 1
        counts["family:" + c.family] += 1
        try:
            out = run_config(c)
        except Exception as e:  # a crash is a violation too (never a NaN or an assertion)
            errors.append({"config": dataclasses.asdict(c), "error": repr(e)[:300]})
            traceback.print_exc(limit=2)
            return
        if not out["ok"]:
            viol.append({"config": dataclasses.asdict(c), **out})
            print("VIOLATION", c, out, flush=True)

    survey()
    dt = time.perf_counter() - t0
    total = len(seen)
    print(f"configurations: {total} distinct, {dt:.1f} s")
    for k, v in sorted(counts.items()):
        print(f"  {k}: {v}")
    print(f"violations: {len(viol)}; crashes: {len(errors)}")
    with open(args.out, "w") as fh:
        json.dump(
            {
                "n_configs": total,
                "seconds": dt,
                "counts": dict(counts),
                "violations": viol,
                "errors": errors,
                "args": vars(args),
            },
            fh,
            indent=1,
            default=str,
        )


if __name__ == "__main__":
    main()
