"""Pairwise work: ONE Prefect task per BLOCK of pairs (retried on storage errors), returning
``pairs.parquet`` rows. What each measure computes lives in :mod:`otaudit.audit.measures`.

Screening (manifest ``screen``): the flow first runs :func:`compute_pair_block` with
``measures=[SCREEN_MEASURE]`` on every pair, then :func:`select_screened` picks the kept
pairs and cuts them into blocks for the remaining measures.

Device: a block computes on its Dask worker's own GPU when the worker has one
(``OTAUDIT_PAIR_DEVICE=auto``, the default; :func:`otaudit.tasks.devices.worker_device`
spreads a machine's workers round-robin over its GPUs), else on the CPU;
``OTAUDIT_PAIR_DEVICE=cpu`` keeps pair work on the CPU. Results are plain floats either way.

A pair whose dataset failed, or whose computation raised any exception, becomes a
``status="failed"`` row with the one-line reason (``internal error: ...`` for an exception
that is not one of otaudit's own); the rest of the block goes on. A block
still failing after its retries becomes failed rows for all its pairs — never raised.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit.audit.measures import (
    INTERNAL_ERROR,
    compute_pair,
    compute_pairs,
    failed_block_rows,
    measure_params,
)
from otaudit.audit.screen import SCREEN_MEASURE, screened_pairs
from otaudit.errors import OTAuditError, describe_error

from .devices import cluster_executor, worker_device
from .plan import AuditPlan, plan_blocks
from .progress import prefect_progress
from .retry import RETRIED, reraise_for_retry

__all__ = [
    "SCREEN_MEASURE",
    "compute_pair_block",
    "measure_params",
    "compute_pair",
    "block_refs",
    "select_screened",
]


def block_refs(block: list[tuple[str, str]], refs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``refs`` (name -> future or ref) that a block of pairs needs."""
    names = {n for pair in block for n in pair}
    return {n: r for n, r in refs.items() if n in names}


@task(name="pair-block", task_run_name="pair-block", **RETRIED)
def compute_pair_block(
    block: list[tuple[str, str]],
    refs: dict[str, Any],
    plan: AuditPlan,
    measures: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The measures (default: all of ``plan.measures``) for a block of pairs
    (:func:`otaudit.audit.measures.compute_pairs`); storage errors are retried, a final
    failure becomes ``status="failed"`` rows — never raised. A long certified solve
    (``ot_bounds``, ``w2``) publishes its running interval as a progress artifact of this
    task run (:mod:`otaudit.tasks.progress`).

    ``refs`` maps the block's dataset names to their ``DatasetRef`` or ``DatasetFailure``.
    """
    from otaudit.config import load_settings

    measures = list(plan.measures) if measures is None else list(measures)
    try:
        settings = load_settings()
        device = worker_device(settings.pair_device)  # the worker's own GPU, or CPU
        return compute_pairs(
            block, refs, plan, measures, device,
            executor=cluster_executor, progress=prefect_progress(settings),
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - recorded in the report with its reason
        if reraise_for_retry(e):
            raise
        reason = f"pair block failed: {describe_error(e)}"
        if not isinstance(e, OTAuditError):  # a programming error: the exit code says so
            reason = INTERNAL_ERROR + reason
        return failed_block_rows(block, plan, measures, reason)


@task(name="select-screened", cache_policy=NO_CACHE)
def select_screened(
    plan: AuditPlan, screen_results: list[list[dict[str, Any]]], n_threads: int
) -> dict[str, Any]:
    """Screening: the pairs kept by the manifest's ``screen``
    (:func:`otaudit.audit.screen.screened_pairs` on the first pass's ``sliced`` rows) and
    the blocks for the second pass.

    Returns ``{"measure", "keep", "order", "n_pairs", "kept" (best first), "measures"
    (the remaining measures), "blocks" (kept pairs in manifest order, cut by
    :func:`plan_blocks`)}``; the report's summary states it.
    """
    screen = plan.manifest.screen
    rows = [row for rows in screen_results for row in rows]
    kept = screened_pairs(rows, plan.pairs, screen.keep, screen.order)
    position = {p: i for i, p in enumerate(plan.pairs)}
    return {
        "measure": SCREEN_MEASURE,
        "keep": screen.keep,
        "order": screen.order,
        "n_pairs": len(plan.pairs),
        "kept": kept,
        "measures": [m for m in plan.measures if m != SCREEN_MEASURE],
        "blocks": plan_blocks(sorted(kept, key=position.__getitem__), n_threads),
    }
