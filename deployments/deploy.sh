#!/usr/bin/env sh
# `prefect deploy` of deployments/prefect.yaml, after the environment check: a missing
# OTAUDIT_REPO / OTAUDIT_MANIFEST is refused in one line (exit 1), before Prefect starts.
#   OTAUDIT_REPO=$PWD OTAUDIT_MANIFEST=/registry/manifest.yaml deployments/deploy.sh --all
set -eu
cd "$(dirname "$0")/.."
python3 deployments/check_env.py >/dev/null
exec "${PREFECT:-prefect}" --no-prompt deploy --prefect-file deployments/prefect.yaml "$@"
