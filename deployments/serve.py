"""Serve the audit flow on a cron schedule from this process (no work pool needed).

    OTAUDIT_MANIFEST=/path/to/manifest.yaml PREFECT_API_URL=http://127.0.0.1:4200/api \
        python deployments/serve.py [--cron "0 2 * * *"] [--name nightly]

The schedule is ``--cron`` when given, else the manifest's ``schedule`` field, else
``config.DEFAULT_CRON`` (02:00 UTC). Needs a running Prefect server (``prefect server
start``): a temporary one would vanish with the process. The Dask cluster comes from the
``OTAUDIT_*`` settings when a run starts.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from otaudit import config
from otaudit.data.manifest import load_manifest
from otaudit.flows.audit import audit

__all__ = ["build_deployment", "schedule_of", "main"]


def schedule_of(manifest: str, cron: str | None = None) -> str:
    """The cron of the deployment: ``cron``, else the manifest's ``schedule``, else
    ``config.DEFAULT_CRON``. The manifest is validated here, so a bad one fails at deploy
    time with its one-line InputError rather than at 02:00."""
    if cron:
        return cron
    return load_manifest(manifest).schedule or config.DEFAULT_CRON


def build_deployment(manifest: str, *, name: str = "nightly", cron: str | None = None) -> Any:
    """The RunnerDeployment that ``audit.serve`` would serve (used by the tests)."""
    return audit.to_deployment(
        name=name,
        cron=schedule_of(manifest, cron),
        parameters={"manifest": manifest},
        tags=["otaudit", "nightly"],
    )


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and block serving scheduled runs of the audit flow."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", default=os.environ.get("OTAUDIT_MANIFEST"))
    p.add_argument("--cron", default=None, help="default: the manifest's schedule, else 0 2 * * *")
    p.add_argument("--name", default="nightly")
    args = p.parse_args(argv)
    if not args.manifest:
        p.error("give --manifest or set OTAUDIT_MANIFEST")
    audit.serve(
        name=args.name,
        cron=schedule_of(args.manifest, args.cron),
        parameters={"manifest": args.manifest},
        tags=["otaudit", "nightly"],
    )


if __name__ == "__main__":
    main()
