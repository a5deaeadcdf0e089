"""Refuse to create a broken deployment: the build step of ``prefect.yaml`` runs this.

``prefect deploy`` renders ``{{ $OTAUDIT_REPO }}`` and ``{{ $OTAUDIT_MANIFEST }}`` from its own
environment; an unset variable renders as an empty string, and Prefect then creates a
deployment whose every run crashes (``FileNotFoundError``) at 02:00. This script exits 1
with a one-line reason on stderr when either is unset or does not point at what it should;
``run_shell_script`` then raises, and ``prefect deploy`` stops before it creates anything
(after our line Prefect prints its own traceback; ``deployments/deploy.sh`` runs this check
first, so that a refusal is the one line only).

On success it prints the deployment's cron on stdout, which ``prefect.yaml`` uses as
``{{ check-env.stdout }}``: ``$OTAUDIT_CRON`` when set (as ``serve.py --cron``), else the
manifest's ``schedule`` field, else ``0 2 * * *`` (``config.DEFAULT_CRON``) — the same
order as ``serve.py``. A manifest on object storage is not read here (stdlib only): its
``schedule`` is not seen, so set ``OTAUDIT_CRON`` for it (a one-line note says so).

Standard library only (it runs under whatever ``python3`` is on PATH, not necessarily the
environment that has otaudit installed). Usage: ``python3 deployments/check_env.py``.
"""

from __future__ import annotations

import os
import re
import sys

__all__ = ["problems", "cron_of", "main"]

#: ``otaudit.config.DEFAULT_CRON`` (not imported: this runs without otaudit installed; a
#: test checks the two are equal).
DEFAULT_CRON = "0 2 * * *"

_HINT = (
    "export OTAUDIT_REPO=/path/to/otaudit/checkout OTAUDIT_MANIFEST=/path/to/manifest.yaml "
    "before prefect deploy"
)


def problems(env: dict[str, str] | os._Environ = os.environ) -> list[str]:
    """What is wrong with the deployment environment (empty when it is usable)."""
    out: list[str] = []
    repo = env.get("OTAUDIT_REPO", "").strip()
    manifest = env.get("OTAUDIT_MANIFEST", "").strip()
    if not repo:
        out.append("OTAUDIT_REPO is not set")
    elif not os.path.isfile(os.path.join(repo, "flows", "audit.py")):
        out.append(f"OTAUDIT_REPO={repo!r} has no flows/audit.py (not an otaudit checkout)")
    if not manifest:
        out.append("OTAUDIT_MANIFEST is not set")
    elif "://" not in manifest:  # object-store manifests are read (and checked) by the run
        if not os.path.isabs(manifest):
            out.append(
                f"OTAUDIT_MANIFEST={manifest!r} is relative (runs start in OTAUDIT_REPO): "
                "give an absolute path"
            )
        elif not os.path.isfile(manifest):
            out.append(f"OTAUDIT_MANIFEST={manifest!r} does not exist")
    return out


def _manifest_schedule(path: str) -> str | None:
    """The top-level ``schedule`` of a local manifest (YAML or JSON), or None."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        import yaml
    except ImportError:  # no PyYAML under this python3: the top-level `schedule:` line
        m = re.search(r"^schedule:\s*[\"']?([^\"'#\n]+?)[\"']?\s*(#.*)?$", text, re.M)
        return m.group(1).strip() if m else None
    data = yaml.safe_load(text)
    value = data.get("schedule") if isinstance(data, dict) else None
    return str(value).strip() if value else None


def cron_of(env: dict[str, str] | os._Environ = os.environ) -> str:
    """``$OTAUDIT_CRON``, else the manifest's ``schedule``, else :data:`DEFAULT_CRON`."""
    cron = env.get("OTAUDIT_CRON", "").strip()
    if cron:
        return cron
    manifest = env.get("OTAUDIT_MANIFEST", "").strip()
    if "://" in manifest:
        print(
            f"otaudit: note: {manifest!r} is not read at deploy time; the schedule is "
            f"{DEFAULT_CRON!r} unless OTAUDIT_CRON is set",
            file=sys.stderr,
        )
        return DEFAULT_CRON
    return _manifest_schedule(manifest) or DEFAULT_CRON


def main() -> int:
    """Print the one-line reason and return 1 when the environment is not usable; else
    print the cron of the deployment and return 0."""
    found = problems()
    cron = DEFAULT_CRON
    if not found:
        try:
            cron = cron_of()
            if len(cron.split()) != 5:
                found.append(f"schedule {cron!r} is not a 5-field cron expression")
        except (OSError, ValueError) as e:  # unreadable or unparsable manifest
            found.append(f"OTAUDIT_MANIFEST cannot be read: {type(e).__name__}: {e}")
    if found:
        reason = "; ".join(" ".join(str(x).split()) for x in found)
        print(f"otaudit: error: deployment refused: {reason}; fix: {_HINT}", file=sys.stderr)
        return 1
    print(cron)
    return 0


if __name__ == "__main__":
    sys.exit(main())
