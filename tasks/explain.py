"""Explanations: one Prefect task runs :func:`otaudit.otdd_flow` on the pairs the manifest's
``explain:`` names (by default those flagged by thresholds) and returns what the report adds
(``flow_*.parquet``, the summary section, one plot per pair, optionally the flowed datasets).

The task reads the datasets' cached statistics (features and labels) by reference, like the
pair blocks; a pair that cannot be explained (one of otaudit's errors) gets a one-line
reason in the summary, and the rest go on.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from otaudit import config

from .datasets import DatasetRef, describe_error, is_transient, open_cache
from .plan import AuditPlan
from .report import artifact_key, collect_rows

__all__ = ["explain_pairs", "explained_pairs"]


def explained_pairs(
    plan: AuditPlan, pair_rows: list[dict[str, Any]], dataset_rows: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """The pairs to explain: ``explain.pairs`` as listed, or (``flagged``) every pair above a
    threshold of any measure, in manifest pair order, once each."""
    from otaudit.audit.report import assess

    spec = plan.manifest.explain
    if spec is None:
        return []
    if spec.pairs != "flagged":
        return [tuple(p) for p in dict.fromkeys(tuple(p) for p in spec.pairs)]
    flagged = {
        (r["dataset_a"], r["dataset_b"])
        for r in assess(pair_rows, dataset_rows, plan.manifest.thresholds).flagged
    }
    return [p for p in plan.pairs if p in flagged]


def _tables(tables: dict[str, list[dict[str, Any]]]) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from otaudit.audit.explain import CLASS_COLUMNS, FEATURE_COLUMNS, STEP_COLUMNS

    head = [("run_id", pa.string()), ("dataset_a", pa.string()), ("dataset_b", pa.string())]
    f64 = pa.float64()
    types = {
        "flow_steps": [(c, f64) for c in STEP_COLUMNS],
        "flow_classes": [(c, f64) for c in CLASS_COLUMNS],
        "flow_features": [(c, f64) for c in FEATURE_COLUMNS],
    }
    types["flow_steps"][0] = ("step", pa.int64())
    types["flow_steps"][-1] = ("plan_changed", pa.bool_())
    types["flow_classes"][0] = ("class_a", pa.string())
    types["flow_classes"][1] = ("class_b", pa.string())
    types["flow_features"][0] = ("feature", pa.int64())
    types["flow_features"][-1] = ("rank", pa.int64())
    out = {}
    for name, cols in types.items():
        schema = pa.schema(head + cols)
        table = pa.Table.from_pylist(tables.get(name, []), schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        out[f"{name}.parquet"] = sink.getvalue().to_pybytes()
    return out


@task(
    name="explain-pairs",
    retries=config.TASK_RETRIES,
    retry_delay_seconds=config.TASK_RETRY_DELAY_S,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)
def explain_pairs(plan: AuditPlan, refs: list[Any], block_results: list[Any]) -> dict[str, Any]:
    """Explain the chosen pairs (see :func:`explained_pairs`) with OTDD gradient flows.

    Returns ``{"pairs": [[a, b], ...], "section": markdown for summary.md, "files":
    {report file name: bytes}}`` (``flow_steps.parquet``, ``flow_classes.parquet``,
    ``flow_features.parquet``, ``flow_<a>__<b>.png`` per pair and, with ``export: true``,
    ``flowed_<a>__<b>.parquet``: A's flowed points with A's labels). ``{}`` without
    ``explain:`` in the manifest. Also publishes the section, with the plots, as a Prefect
    markdown artifact.
    """
    import numpy as np
    from prefect.artifacts import create_markdown_artifact

    import otaudit
    from otaudit.audit.explain import (
        explain_paragraph,
        explain_section,
        flow_rows,
        plot_name,
        render_flow_plot,
    )
    from otaudit.dataset_distance import DatasetStats
    from otaudit.errors import OTAuditError, StorageError

    spec = plan.manifest.explain
    if spec is None:
        return {}
    pair_rows, dataset_rows = collect_rows(plan, refs, block_results)
    pairs = explained_pairs(plan, pair_rows, dataset_rows)
    by_name = {s.name: r for s, r in zip(plan.manifest.datasets, refs, strict=True)}
    otdd = plan.manifest.measures.otdd
    inner = otdd.inner if otdd is not None else config.OTDD_INNER
    lx = otdd.lambda_x if otdd is not None else config.LAMBDA_X
    ly = otdd.lambda_y if otdd is not None else config.LAMBDA_Y
    cache = open_cache(plan)
    loaded: dict[str, Any] = {}

    def data(name: str) -> tuple[Any, Any]:
        if name not in loaded:
            ref = by_name[name]
            arrays = cache.get_arrays("stats", ref.stats_key)
            if arrays is None:
                raise StorageError(
                    f"cached statistics of dataset {name!r} vanished from "
                    f"{plan.output!r}/_cache; fix: re-run the audit"
                )
            s = DatasetStats.from_arrays(arrays)
            X = s.features.numpy()
            if s.labeled:
                cls = np.empty(s.n_classes, dtype=object)
                cls[:] = list(s.classes)
                loaded[name] = (X, cls[s.codes.numpy()])
            else:
                loaded[name] = (X, None)
        return loaded[name]

    tables: dict[str, list[dict[str, Any]]] = {
        "flow_steps": [],
        "flow_classes": [],
        "flow_features": [],
    }
    files: dict[str, bytes] = {}
    paragraphs: list[str] = []
    plots: list[str] = []
    images: list[str] = []
    done: list[list[str]] = []
    for a, b in pairs:
        bad = [n for n in (a, b) if not isinstance(by_name.get(n), DatasetRef)]
        if bad:
            paragraphs.append(f"**{a} → {b}**: not explained: dataset {bad[0]!r} failed.")
            continue
        try:
            (Xa, ya), (Xb, yb) = data(a), data(b)
            r = otaudit.otdd_flow(
                Xa,
                ya,
                Xb,
                yb,
                steps=spec.steps,
                step_size=spec.step_size,
                mode=spec.mode,
                inner=inner,
                solver=spec.solver,
                lambda_x=lx,
                lambda_y=ly,
                names=(a, b),
                trajectory_sample=spec.trajectory_sample,
                **spec.options,
            )
        except StorageError:
            raise  # transient: the task is retried
        except OTAuditError as e:
            paragraphs.append(f"**{a} → {b}**: not explained: {describe_error(e)}")
            continue
        for name, rows in flow_rows(r, run_id=plan.run_id, dataset_a=a, dataset_b=b).items():
            tables[name].extend(rows)
        paragraphs.append(explain_paragraph(r, a, b, top_features=spec.top_features))
        rng = np.random.default_rng(config.SEED)
        tgt = Xb[rng.choice(len(Xb), min(len(Xb), 1000), replace=False)]
        png = render_flow_plot(r, title=f"{a} → {b}", target=tgt)
        files[plot_name(a, b)] = png
        plots.append(plot_name(a, b))
        images.append(
            f"![{a} → {b}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
        )
        if spec.export:
            from otaudit.app.demo import parquet_table

            ylab = None if ya is None else np.asarray([str(v) for v in ya])
            import pyarrow as pa
            import pyarrow.parquet as pq

            sink = pa.BufferOutputStream()
            pq.write_table(parquet_table(np.asarray(r.X), ylab), sink)
            files[f"flowed_{a}__{b}.parquet"] = sink.getvalue().to_pybytes()
        done.append([a, b])
    files.update(_tables(tables))
    section = explain_section(paragraphs, plots)
    create_markdown_artifact(
        markdown=section + "\n" + "\n\n".join(images),
        key=artifact_key(plan.manifest.name, "explain"),
        description=f"otaudit explanations (OTDD gradient flows) of run {plan.run_id}",
    )
    return {"pairs": done, "section": section, "files": files}
