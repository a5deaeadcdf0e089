#!/usr/bin/env bash
# The GPU check (issue 14, item 4): every open GPU target in ONE script, < 8 min on one
# H100/H200. Each step runs in its own process under `timeout` (STEP_TIMEOUT_<step> seconds),
# so one slow step cannot eat the budget. Results: $OUT/gpu_results.json (OUT unset:
# benchmarks/RESULTS_gpu.md and benchmarks/gpu_results.json), and a table on stdout.
# Without a CUDA device (or GPU_CHECK_FORCE_CPU=1) every step runs a tiny smoke version on
# the CPU, the script prints "no CUDA device" and exits 0.
#   usage: [OUT=dir] [PYTHON=.venv/bin/python] bash benchmarks/gpu_check.sh
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" PYTHONUNBUFFERED=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1

SMOKE=""
if [ "${GPU_CHECK_FORCE_CPU:-0}" = "1" ] || \
   ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  SMOKE="--smoke"
  echo "no CUDA device: running the smoke version of every step on CPU (numbers are not GPU results)"
fi

if [ -n "${OUT:-}" ]; then DEST="$OUT"; else DEST="$HERE"; fi
mkdir -p "$DEST"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# step:timeout_s (full run total <= 440 s + start-up; smoke steps get GPU_CHECK_SMOKE_TIMEOUT (180) s each)
STEPS="batched_blocks:60 bounds_1m:90 otdd_100k:45 otdd_matrix:90 sinkhorn_32k:45 embed_throughput:45"
for entry in $STEPS; do
  step="${entry%%:*}"; limit="${entry##*:}"
  [ -n "$SMOKE" ] && limit="${GPU_CHECK_SMOKE_TIMEOUT:-180}"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$PY" "$HERE/gpu_check.py" "$step" "$TMP/$step.json" $SMOKE \
    > "$TMP/$step.log" 2>&1
  rc=$?
  if [ ! -s "$TMP/$step.json" ]; then
    why="exit $rc"; [ "$rc" = 124 ] || [ "$rc" = 137 ] && why="timeout after ${limit}s"
    printf '{"step": "%s", "status": "error", "error": "%s", "wall_seconds": %s}\n' \
      "$step" "$why" "$(( $(date +%s) - t0 ))" > "$TMP/$step.json"
    tail -5 "$TMP/$step.log" >&2
  fi
done

"$PY" - "$TMP" "$DEST" "${OUT:-}" "$SMOKE" <<'EOF'
import json, os, platform, sys, time
tmp, dest, out, smoke = sys.argv[1:5]
order = ["batched_blocks", "bounds_1m", "otdd_100k", "otdd_matrix", "sinkhorn_32k",
         "embed_throughput"]
steps = [json.load(open(os.path.join(tmp, f"{s}.json"))) for s in order]
res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
       "smoke": bool(smoke), "steps": steps}
keys = ("seconds", "seconds_per_iter", "gap_rel", "block_problems_per_s", "rows_per_s",
        "ratio_to_floor")
rows = []
for s in steps:
    main = "; ".join(f"{k}={s[k]:.4g}" for k in keys if isinstance(s.get(k), (int, float)))
    rows.append((s["step"], s.get("status"), s.get("device", ""), main or s.get("error", ""),
                 s.get("target", ""), s.get("met")))
table = ["| step | status | device | measured | target | met |", "|---|---|---|---|---|---|"]
table += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
print("\n".join(table))
with open(os.path.join(dest, "gpu_results.json"), "w") as f:
    json.dump(res, f, indent=1, default=str)
if not out:
    with open(os.path.join(dest, "RESULTS_gpu.md"), "w") as f:
        f.write(f"# GPU check ({res['when']}, smoke={res['smoke']})\n\n" + "\n".join(table) + "\n")
EOF
exit 0
