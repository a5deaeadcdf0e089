"""What a pair computes for each measure: which library call each manifest measure makes,
on what, and the ``pairs.parquet`` rows of a block of pairs (through the pair cache).

Per pair and measure:

- ``otdd``: :func:`otaudit.otdd_from_stats` on the two cached :class:`DatasetStats`;
- ``ot_bounds``: :func:`otaudit.ot_bounds` on the two cached embeddings;
- ``w2``: plain W2² with :func:`otaudit.solve_ot` on the squared-Euclidean cost of the two
  embeddings (``solver`` from the manifest's ``w2`` mapping, default ``"auto"``: exact LP
  up to ``config.EXACT_MAX_ENTRIES``, certified mini-batch bounds beyond);
- ``sliced``: the screening estimate :func:`otaudit.sliced_otdd` (``certified=False``, its
  ``lower`` certified) on the features and class codes held by the two cached statistics.

To add a measure: a branch in :func:`compute_pair`, its name in
``otaudit.data.manifest.MEASURES`` and its options model in ``MeasuresSpec``.

Pair results are cached (key: :func:`otaudit.data.cache.pair_key` — measure, its
parameters, both embedding keys, the fingerprint of the numerics), so a scheduled re-run
recomputes only the pairs of datasets that changed, and any change of the numerical code or
its constants recomputes everything.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..errors import InputError, OTAuditError, StorageError, describe_error
from .plan import AuditPlan
from .prepare import DatasetRef, check_emb, check_stats, reprepare
from .progress import PROGRESS_MEASURES
from .report import failed_pair_row, pair_row, result_record

__all__ = [
    "INTERNAL_ERROR",
    "Loader",
    "measure_params",
    "compute_pair",
    "compute_pairs",
    "failed_block_rows",
    "check_pair_record",
]

log = logging.getLogger(__name__)

#: Prefix of the ``error`` of a failed pair row whose cause is not one of otaudit's own
#: errors (a programming error): the run's exit code is then "failed" (report.assess).
INTERNAL_ERROR = "internal error: "

#: Relative slack of the cached-result range check ``lower <= value <= upper``: results are
#: stored as JSON floats (exact round trip), so only solver round-off is allowed for.
_RANGE_RTOL = 1e-9
_RECORD_KEYS = ("value", "lower", "upper", "certified", "method", "n_solves", "seconds")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def check_pair_record(r: Any) -> str | None:
    """Why a cached pair result must not be trusted (None: it passes): the schema, a finite
    value, ``lower <= value <= upper`` (within round-off) and certificates consistent with
    finite bounds and the result's kind."""
    if not isinstance(r, dict) or any(k not in r for k in _RECORD_KEYS):
        return "pair entry lacks result fields"
    v, lo, up = _num(r["value"]), _num(r["lower"]), _num(r["upper"])
    if v is None or lo is None or up is None or not math.isfinite(v):
        return "pair entry value/bounds are not numbers (value must be finite)"
    if math.isnan(lo) or math.isnan(up):
        return "pair entry bounds are NaN"
    if not isinstance(r["method"], str) or not isinstance(r["n_solves"], int):
        return "pair entry method/n_solves malformed"
    flags = [r["certified"], r.get("lower_certified", False), r.get("upper_certified", False)]
    if not all(isinstance(f, bool) for f in flags):
        return "pair entry certificates are not booleans"
    tol = _RANGE_RTOL * max(1.0, abs(v), abs(lo) if math.isfinite(lo) else 0.0)
    if lo > up + tol or v < lo - tol or v > up + tol:
        return f"pair entry out of range (lower {lo!r}, value {v!r}, upper {up!r})"
    certified, lc, uc = flags
    if certified and not (lc and uc):
        return "pair entry certified without both bounds certified"
    if (lc and not math.isfinite(lo)) or (uc and not math.isfinite(up)):
        return "pair entry certifies an infinite bound"
    kind = r.get("kind")
    if kind is not None:
        want = ("exact" if lo == up else "bracketed") if lc and uc else "estimate"
        if kind != want:
            return f"pair entry kind {kind!r} does not match its certificates ({want!r})"
    return None


def measure_params(plan: AuditPlan, measure: str) -> dict[str, Any]:
    """The manifest's parameters of ``measure`` as a plain dict (also the cache key part)."""
    spec = getattr(plan.manifest.measures, measure)
    if spec is None:
        return {}
    return dict(spec) if isinstance(spec, dict) else spec.model_dump(mode="json")


#: the measures that take ``executor=`` (one large pair spread over the cluster)
EXECUTOR_MEASURES = ("otdd", "ot_bounds", "w2", "sliced")


def compute_pair(
    measure: str,
    params: dict[str, Any],
    load: Any,
    ra: DatasetRef,
    rb: DatasetRef,
    executor: Any = None,
    progress: Any = None,
) -> Any:
    """Compute one measure for one pair; ``load(kind, ref)`` returns stats or embeddings.

    ``executor``: a factory of context managers yielding a ``concurrent.futures.Executor``
    (e.g. :func:`otaudit.tasks.devices.cluster_executor`, which secedes the pair's Dask
    task while the cluster works on it). Used only by large pairs (``n_a + n_b >=
    config.PAIR_EXECUTOR_MIN_POINTS``) of :data:`EXECUTOR_MEASURES`; the numbers are the
    same either way (issue 14).

    ``progress``: ``progress(round, lower, upper)`` for the anytime solve of the measures
    of :data:`otaudit.audit.progress.PROGRESS_MEASURES` (ignored by the others); it does
    not change the numbers."""
    from .. import config

    big = ra.n_rows + rb.n_rows >= config.PAIR_EXECUTOR_MIN_POINTS
    if executor is None or not big or measure not in EXECUTOR_MEASURES:
        return _compute_pair(measure, params, load, ra, rb, None, progress)
    with executor() as ex:
        return _compute_pair(measure, params, load, ra, rb, ex, progress)


def _compute_pair(
    measure: str,
    params: dict[str, Any],
    load: Any,
    ra: DatasetRef,
    rb: DatasetRef,
    ex: Any,
    progress: Any = None,
) -> Any:
    import otaudit

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
        sa, sb = load("stats", ra), load("stats", rb)
        return otaudit.otdd_from_stats(sa, sb, **p, **options, executor=ex, progress=progress)
    if measure == "ot_bounds":
        return otaudit.ot_bounds(
            load("emb", ra), load("emb", rb), **params, progress=progress, executor=ex
        )
    if measure == "w2":
        import torch

        from ..core.costs import SqEuclidean

        p = dict(params)
        solver = p.pop("solver", "auto")
        Xa = torch.as_tensor(load("emb", ra), dtype=torch.float64)
        Xb = torch.as_tensor(load("emb", rb), dtype=torch.float64)
        cost = SqEuclidean(Xa, Xb)
        return otaudit.solve_ot(cost, solver=solver, **p, progress=progress, executor=ex)
    if measure == "sliced":
        sa, sb = load("stats", ra), load("stats", rb)
        ya = sa.codes if sa.labeled else None  # unlabeled: sliced W2 (lower bound still holds)
        yb = sb.codes if sb.labeled else None
        return otaudit.sliced_otdd(sa.features, ya, sb.features, yb, **params, executor=ex)
    raise ValueError(f"unknown measure {measure!r}")  # the manifest validates measures


class Loader:
    """Reads each dataset's statistics / embeddings from the cache once per block, onto
    ``device``."""

    def __init__(self, plan: AuditPlan, cache: Any, device: Any):
        self.plan, self.cache, self.device = plan, cache, device
        self.loaded: dict[tuple[str, str], Any] = {}

    def __call__(self, kind: str, ref: DatasetRef) -> Any:
        key = (kind, ref.name)
        if key not in self.loaded:
            arrays = self._read(kind, ref)
            if arrays is None:  # vanished or bad (then deleted): recompute it here, once
                what = "statistics" if kind == "stats" else "embeddings"
                log.warning(
                    "cached %s of dataset %r missing or bad; re-preparing it", what, ref.name
                )
                new = reprepare(self.plan, ref.name)
                if (new.emb_key, new.stats_key) != (ref.emb_key, ref.stats_key):
                    raise InputError(
                        "the dataset changed while the audit ran (its fingerprint moved)",
                        dataset=ref.name,
                        field="uri",
                        fix="re-run the audit once the dataset is no longer being written",
                    )
                arrays = self._read(kind, ref)
                if arrays is None:
                    raise StorageError(
                        f"cached {what} of dataset {ref.name!r} could not be read back from "
                        f"{self.plan.output!r}/_cache after recomputing it; fix: check the "
                        "output store (the block is retried)"
                    )
            self.loaded[key] = self._place(kind, arrays, ref)
        return self.loaded[key]

    def _read(self, kind: str, ref: DatasetRef) -> dict[str, Any] | None:
        if kind == "stats":
            return self.cache.get_arrays("stats", ref.stats_key, check_stats)
        return self.cache.get_arrays("emb", ref.emb_key, check_emb)

    def _place(self, kind: str, arrays: dict[str, Any], ref: Any = None) -> Any:
        if kind == "stats":
            import dataclasses

            from ..dataset_distance import DatasetStats

            stats = DatasetStats.from_arrays(arrays, device=self.device)
            # two datasets sharing a file share cached statistics: name the one asked for
            if ref is not None and stats.name != ref.name:
                stats = dataclasses.replace(stats, name=ref.name)
            return stats
        X = arrays["X"]
        if self.device.type == "cpu":
            return X
        import torch

        return torch.as_tensor(X).to(self.device)


def compute_pairs(
    block: list[tuple[str, str]],
    refs: dict[str, Any],
    plan: AuditPlan,
    measures: list[str],
    device: Any,
    executor: Any = None,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """The ``pairs.parquet`` rows (dicts) of ``measures`` for a block of pairs, on ``device``
    (``executor``: for the large pairs, see :func:`compute_pair`).

    ``progress``: None, or a factory ``progress(pair, measure)`` (pair as ``"a~b"``) of a
    :class:`~otaudit.audit.progress.SolveProgress`: the anytime solves of
    :data:`~otaudit.audit.progress.PROGRESS_MEASURES` then publish their running certified
    interval (throttled; a short solve publishes nothing; closed after the solve).
    :func:`otaudit.tasks.progress.prefect_progress` gives the Prefect one.

    ``refs`` maps the block's dataset names to their :class:`DatasetRef`, or to the
    ``DatasetFailure`` of a dataset that failed (its pairs become failed rows). A pair and
    measure whose computation raises ANY exception becomes its own ``status="failed"`` row
    with the one-line reason and the block goes on; an exception that is not one of
    otaudit's own (a programming error) is recorded as ``"internal error: <Type>: ..."``.
    A :class:`StorageError` is raised (transient: the caller retries the block). A cached
    result is used only if it passes :func:`check_pair_record`; else it is deleted and
    recomputed.
    """
    from ..data.cache import pair_key

    cache = plan.cache()
    load = Loader(plan, cache, device)
    rows: list[dict[str, Any]] = []
    common = {"run_id": plan.run_id, "code_version": plan.code_version}
    for a, b in block:
        ra, rb = refs[a], refs[b]
        for measure in measures:
            params = measure_params(plan, measure)
            names = {"dataset_a": a, "dataset_b": b, "measure": measure}
            bad = [(n, r) for n, r in ((a, ra), (b, rb)) if not isinstance(r, DatasetRef)]
            if bad:
                n, err = bad[0]
                error = f"dataset {n!r} failed: {err.error}"
                rows.append(failed_pair_row(**common, **names, params=params, error=error))
                continue
            sizes = {"n_a": ra.n_rows, "n_b": rb.n_rows}
            key = pair_key(cache, measure, params, ra.emb_key, rb.emb_key)
            hit = cache.get_json("pair", key, check_pair_record) if plan.use_cache else None
            if hit is not None:
                rows.append(pair_row(**common, **names, **sizes, result=hit, cached=True))
                continue
            watch = _watch(progress, a, b, measure)
            try:
                result = compute_pair(measure, params, load, ra, rb, executor, watch)
                if watch is not None:
                    watch.close()
                record = result_record(result)
            except StorageError:
                raise  # transient: the whole block is retried
            except Exception as e:  # noqa: BLE001 - this pair+measure's own failed row
                error = describe_error(e)
                if not isinstance(e, OTAuditError):
                    error = INTERNAL_ERROR + error
                    log.warning("pair %s/%s %s: %s", a, b, measure, error)
                rows.append(failed_pair_row(**common, **names, **sizes, params=params, error=error))
                continue
            cache.put_json("pair", key, record)
            rows.append(pair_row(**common, **names, **sizes, result=record))
    return rows


def _watch(progress: Any, a: str, b: str, measure: str) -> Any:
    """The progress callable of one pair's anytime solve (``progress(pair, measure)``), or
    None for a measure that is not anytime."""
    if progress is None or measure not in PROGRESS_MEASURES:
        return None
    return progress(f"{a}~{b}", measure)


def failed_block_rows(
    block: list[tuple[str, str]], plan: AuditPlan, measures: list[str], reason: str
) -> list[dict[str, Any]]:
    """``status="failed"`` rows for every pair and measure of a block that failed as a whole."""
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
