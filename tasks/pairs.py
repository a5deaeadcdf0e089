"""Pairwise work: one coarse Prefect task per BLOCK of pairs, returning report rows.

Per pair and measure:

- ``otdd``: :func:`otaudit.otdd_from_stats` on the two cached :class:`DatasetStats`;
- ``ot_bounds``: :func:`otaudit.ot_bounds` on the two cached embeddings;
- ``w2``: plain W2² with :func:`otaudit.solve_ot` on the squared-Euclidean cost of the two
  embeddings (``solver`` from the manifest's ``w2`` mapping, default ``"auto"``: exact LP
  up to ``config.EXACT_MAX_ENTRIES``, certified mini-batch bounds beyond);
- ``sliced``: the screening estimate :func:`otaudit.sliced_otdd` (``certified=False``) on the
  features and class codes held by the two cached :class:`DatasetStats`.

Screening (manifest ``screen``): the flow first runs :func:`compute_pair_block` with
``measures=["sliced"]`` on every pair, then :func:`select_screened` picks the kept pairs and
cuts them into blocks for the remaining measures.

Device: a block computes on its Dask worker's own GPU when the worker has one
(``OTAUDIT_PAIR_DEVICE=auto``, the default; :func:`otaudit.tasks.devices.worker_device`
spreads a machine's workers round-robin over its GPUs), else on the CPU;
``OTAUDIT_PAIR_DEVICE=cpu`` keeps pair work on the CPU. Results are plain floats either way.

Pair results are cached too (key: measure, its parameters, both embedding keys, code
version), so a scheduled re-run recomputes only the pairs of datasets that changed.
A pair whose dataset failed, or whose computation raised one of otaudit's errors, becomes a
``status="failed"`` row with the one-line reason; the rest of the block goes on.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit import config

from .datasets import DatasetRef, describe_error, is_transient, open_cache
from .plan import AuditPlan, plan_blocks

__all__ = [
    "compute_pair_block",
    "pair_block_attempt",
    "measure_params",
    "compute_pair",
    "block_refs",
    "select_screened",
]


def measure_params(plan: AuditPlan, measure: str) -> dict[str, Any]:
    """The manifest's parameters of ``measure`` as a plain dict (also the cache key part)."""
    spec = getattr(plan.manifest.measures, measure)
    if spec is None:
        return {}
    return dict(spec) if isinstance(spec, dict) else spec.model_dump(mode="json")


def compute_pair(
    measure: str, params: dict[str, Any], load: Any, ra: DatasetRef, rb: DatasetRef
) -> Any:
    """Compute one measure for one pair; ``load(kind, ref)`` returns stats or embeddings."""
    import otaudit
    from otaudit.errors import InputError

    if ra.dim != rb.dim:  # name both datasets (ot_bounds/w2 only see anonymous arrays)
        raise InputError(
            f"dimension mismatch: {ra.name!r} has d={ra.dim}, {rb.name!r} has d={rb.dim}",
            dataset=f"{ra.name} vs {rb.name}",
            field="features",
            fix="embed both datasets with the same embedder (same output dimension)",
        )
    if measure == "otdd":
        p = dict(params)
        options = p.pop("options", {}) or {}
        return otaudit.otdd_from_stats(load("stats", ra), load("stats", rb), **p, **options)
    if measure == "ot_bounds":
        return otaudit.ot_bounds(load("emb", ra), load("emb", rb), **params)
    if measure == "w2":
        import torch

        from otaudit.core.costs import SqEuclidean

        p = dict(params)
        solver = p.pop("solver", "auto")
        Xa = torch.as_tensor(load("emb", ra), dtype=torch.float64)
        Xb = torch.as_tensor(load("emb", rb), dtype=torch.float64)
        return otaudit.solve_ot(SqEuclidean(Xa, Xb), solver=solver, **p)
    if measure == "sliced":
        sa, sb = load("stats", ra), load("stats", rb)
        ya = sa.codes if sa.labeled else None  # unlabelled: sliced W2 (lower bound still holds)
        yb = sb.codes if sb.labeled else None
        return otaudit.sliced_otdd(sa.features, ya, sb.features, yb, **params)
    raise ValueError(f"unknown measure {measure!r}")  # the manifest validates measures


def block_refs(block: list[tuple[str, str]], refs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``refs`` (name -> future or ref) that a block of pairs needs."""
    names = {n for pair in block for n in pair}
    return {n: r for n, r in refs.items() if n in names}


@task(name="pair-block", task_run_name="pair-block", cache_policy=NO_CACHE)
def compute_pair_block(
    block: list[tuple[str, str]],
    refs: dict[str, Any],
    plan: AuditPlan,
    measures: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The measures (default: all of ``plan.measures``) for a block of pairs
    (:func:`pair_block_attempt`, retried on storage errors); a final failure becomes
    ``status="failed"`` rows — never raised."""
    from otaudit.audit.report import failed_pair_row

    measures = list(plan.measures) if measures is None else list(measures)
    try:
        return pair_block_attempt(block, refs, plan, measures)
    except Exception as e:  # noqa: BLE001 - recorded in the report with its reason
        reason = f"pair block failed: {describe_error(e)}"
        return [
            failed_pair_row(
                run_id=plan.run_id,
                dataset_a=a,
                dataset_b=b,
                measure=m,
                error=reason,
                code_version=plan.code_version,
                params=measure_params(plan, m),
            )
            for a, b in block
            for m in measures
        ]


@task(
    name="pair-block-attempt",
    task_run_name="pair-attempt",
    retries=config.TASK_RETRIES,
    retry_delay_seconds=config.TASK_RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)
def pair_block_attempt(
    block: list[tuple[str, str]],
    refs: dict[str, Any],
    plan: AuditPlan,
    measures: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The measures (default: all of ``plan.measures``) for a block of pairs; returns
    ``pairs.parquet`` rows (dicts).

    ``refs`` maps the block's dataset names to their :class:`DatasetRef`, or to the
    :class:`DatasetFailure` of a dataset that failed. Statistics and embeddings are read
    from the cache once per block and dataset.
    """
    import torch

    from otaudit.audit.report import failed_pair_row, pair_row
    from otaudit.config import load_settings
    from otaudit.dataset_distance import DatasetStats
    from otaudit.errors import OTAuditError, StorageError
    from otaudit.tasks.devices import worker_device

    by_name = refs
    measures = list(plan.measures) if measures is None else list(measures)
    cache = open_cache(plan)
    loaded: dict[tuple[str, str], Any] = {}

    device = worker_device(load_settings().pair_device)  # this worker's own GPU, or CPU

    def load(kind: str, ref: DatasetRef) -> Any:
        key = (kind, ref.name)
        if key not in loaded:
            if kind == "stats":
                arrays = cache.get_arrays("stats", ref.stats_key)
                if arrays is None:
                    raise StorageError(
                        f"cached statistics of dataset {ref.name!r} vanished from "
                        f"{plan.output!r}/_cache; fix: re-run the audit"
                    )
                loaded[key] = DatasetStats.from_arrays(arrays, device=device)
            else:
                arrays = cache.get_arrays("emb", ref.emb_key)
                if arrays is None:
                    raise StorageError(
                        f"cached embeddings of dataset {ref.name!r} vanished from "
                        f"{plan.output!r}/_cache; fix: re-run the audit"
                    )
                X = arrays["X"]
                loaded[key] = X if device.type == "cpu" else torch.as_tensor(X).to(device)
        return loaded[key]

    rows: list[dict[str, Any]] = []
    common = {"run_id": plan.run_id, "code_version": plan.code_version}
    for a, b in block:
        ra, rb = by_name[a], by_name[b]
        for measure in measures:
            params = measure_params(plan, measure)
            names = {"dataset_a": a, "dataset_b": b, "measure": measure}
            bad = [(n, r) for n, r in ((a, ra), (b, rb)) if not isinstance(r, DatasetRef)]
            if bad:
                n, err = bad[0]
                rows.append(
                    failed_pair_row(
                        **common,
                        **names,
                        params=params,
                        error=f"dataset {n!r} failed: {err.error}",
                    )
                )
                continue
            sizes = {"n_a": ra.n_rows, "n_b": rb.n_rows}
            key = cache.key(
                "pair",
                measure,
                json.dumps(params, sort_keys=True),
                ra.emb_key,
                rb.emb_key,
                plan.code_version,
            )
            hit = cache.get_json("pair", key) if plan.use_cache else None
            if hit is not None:
                rows.append(pair_row(**common, **names, **sizes, result=hit, cached=True))
                continue
            try:
                res = compute_pair(measure, params, load, ra, rb)
            except StorageError:
                raise  # transient: the whole block is retried
            except OTAuditError as e:
                rows.append(
                    failed_pair_row(
                        **common, **names, **sizes, params=params, error=describe_error(e)
                    )
                )
                continue
            d = {k: v for k, v in res.to_dict().items() if k != "extra"}
            d = json.loads(json.dumps(d, default=str))  # plain JSON types for the cache
            cache.put_json("pair", key, d)
            rows.append(pair_row(**common, **names, **sizes, result=d))
    return rows


@task(name="select-screened", cache_policy=NO_CACHE)
def select_screened(
    plan: AuditPlan, screen_results: list[list[dict[str, Any]]], n_threads: int
) -> dict[str, Any]:
    """Screening: the pairs kept by the manifest's ``screen`` (:func:`otaudit.audit.screen.screened_pairs`
    on the first pass's ``sliced`` rows) and the blocks for the second pass.

    Returns ``{"measure", "keep", "order", "n_pairs", "kept" (best first), "measures"
    (the remaining measures), "blocks" (kept pairs in manifest order, cut by
    :func:`plan_blocks`)}``; the report's summary states it.
    """
    from otaudit.audit.screen import SCREEN_MEASURE, screened_pairs

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
