"""Planning an audit: one task that loads the manifest, checks the output store and cuts the
pairs into blocks (:func:`otaudit.audit.plan.load_plan`)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit.audit.plan import AuditPlan, code_version, load_plan, plan_blocks
from otaudit.audit.report import new_run_id

__all__ = ["AuditPlan", "plan_audit", "plan_blocks", "code_version", "new_run_id"]


@task(name="plan-audit", cache_policy=NO_CACHE)
def plan_audit(
    manifest: str,
    output: str | None,
    run_id: str,
    n_threads: int,
    use_cache: bool = True,
) -> AuditPlan:
    """Load and validate the manifest, check that the output store answers, plan the pairs.

    Raises:
        InputError: a bad manifest (one line naming dataset, field and fix).
        StorageError: the output store is unreachable.
    """
    return load_plan(manifest, output, run_id, n_threads, use_cache)
