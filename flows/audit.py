"""The ``audit`` flow: manifest → per-dataset preparation → blocks of pairs → report.

The flow only composes tasks (:mod:`otaudit.tasks`); it does no arithmetic and no I/O.
Its default task runner is a :class:`prefect_dask.DaskTaskRunner` configured from
:func:`otaudit.config.load_settings` when the flow starts (LocalCluster, or the scheduler in
``OTAUDIT_DASK_ADDRESS``); swap it with ``audit.with_options(task_runner=...)``.

Partial failure: a dataset whose preparation fails (bad input, or storage still failing
after the retries) is recorded with its reason; its pairs become ``status="failed"`` rows;
every other pair is computed and the report is published. The returned outcome carries the
exit code (0 ok, 2 partial, 3 threshold exceeded, 1 total failure).

Screening (manifest ``screen``): a first pass of pair blocks computes only the ``sliced``
estimate for every pair; ``select-screened`` keeps the ``screen.keep`` nearest (or farthest)
pairs; a second pass of blocks computes the remaining measures on those pairs only. Without
``screen`` there is one pass with every measure.

GPU: when a worker of the cluster advertises a ``GPU`` resource, the per-dataset tasks
(which embed) are submitted under ``dask.annotate(resources={"GPU": 1})`` so they run on GPU
workers, one at a time per GPU. Start such workers with
``dask worker tcp://scheduler:8786 --resources "GPU=1"``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dask
from prefect import flow, tags

from otaudit.flows.runtime import SettingsDaskTaskRunner, cluster_has_gpus
from otaudit.tasks.datasets import prepare_dataset
from otaudit.tasks.explain import explain_pairs
from otaudit.tasks.pairs import SCREEN_MEASURE, block_refs, compute_pair_block, select_screened
from otaudit.tasks.plan import new_run_id, plan_audit
from otaudit.tasks.report import publish_report

__all__ = ["audit"]


def _explain(plan: Any, refs: dict[str, Any], blocks: list[Any]) -> Any:
    """The explanation task's future when the manifest has ``explain:``, else None."""
    if plan.manifest.explain is None:
        return None
    return explain_pairs.submit(plan, list(refs.values()), blocks)


@flow(
    name="otaudit-audit",
    task_runner=SettingsDaskTaskRunner(),
    validate_parameters=True,
)
def audit(
    manifest: str,
    run_id: str | None = None,
    output: str | None = None,
    n_threads: int = 2,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Audit every selected pair of a registry manifest and publish the report.

    Args:
        manifest: path or URI of the manifest YAML.
        run_id: id of this run (names the report prefix); None (scheduled runs): a new
            :func:`otaudit.tasks.plan.new_run_id`.
        output: override the manifest's ``output`` URI.
        n_threads: Dask threads available (sizes the pair blocks).
        use_cache: read the embedding/statistics/pair cache (results are always written).

    Returns:
        The outcome of :func:`otaudit.tasks.report.publish_report` (report ``uri``,
        ``status``, ``exit_code``, failed datasets, flagged pairs, ``summary``).
    """
    run_id = run_id or new_run_id()
    with tags(f"otaudit-run:{run_id}"):
        plan = plan_audit(manifest, output, run_id, n_threads, use_cache)
        gpu = cluster_has_gpus.submit().result()
        annotate = dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext()
        with annotate:
            refs = {
                spec.name: prepare_dataset.submit(spec, plan) for spec in plan.manifest.datasets
            }
        if plan.manifest.screen is None:
            blocks = [
                compute_pair_block.submit(block, block_refs(block, refs), plan)
                for block in plan.blocks
            ]
            why = _explain(plan, refs, blocks)
            outcome = publish_report.submit(plan, list(refs.values()), blocks, explanation=why)
            return outcome.result()
        screened = [
            compute_pair_block.submit(block, block_refs(block, refs), plan, [SCREEN_MEASURE])
            for block in plan.blocks
        ]
        screen = select_screened.submit(plan, screened, n_threads).result()
        blocks = [
            compute_pair_block.submit(block, block_refs(block, refs), plan, screen["measures"])
            for block in screen["blocks"]
        ]
        outcome = publish_report.submit(
            plan,
            list(refs.values()),
            screened + blocks,
            screening=screen,
            explanation=_explain(plan, refs, screened + blocks),
        )
        return outcome.result()
