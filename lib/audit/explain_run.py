"""Explanations of an audit run: :func:`otaudit.otdd_flow` on the pairs the manifest's
``explain:`` names (by default those flagged by thresholds), on the datasets' cached
statistics, turned into what the report adds (``flow_*.parquet``, the summary section, one
plot per pair, optionally the flowed datasets). The Prefect task is
:func:`otaudit.tasks.explain.explain_pairs`; the pure rendering is :mod:`otaudit.audit.explain`.

A pair that cannot be explained (one of otaudit's errors, or a failed dataset) gets a
one-line reason in the summary and the rest go on; a :class:`StorageError` is raised
(transient: the task is retried).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa

from .. import config
from ..data.parquet import dataset_table, table_bytes
from ..errors import OTAuditError, StorageError, describe_error
from .explain import (
    CLASS_COLUMNS,
    FEATURE_COLUMNS,
    STEP_COLUMNS,
    explain_paragraph,
    explain_section,
    flow_rows,
    plot_name,
    render_flow_plot,
)
from .measures import Loader
from .plan import AuditPlan
from .prepare import DatasetRef
from .report import assess

__all__ = ["explained_pairs", "explain_run", "flow_tables"]


def explained_pairs(
    plan: AuditPlan, pair_rows: list[dict[str, Any]], dataset_rows: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """The pairs to explain: ``explain.pairs`` as listed, or (``flagged``) every pair above a
    threshold of any measure, in manifest pair order, once each."""
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


def flow_tables(run_id: str, tables: dict[str, list[dict[str, Any]]]) -> dict[str, bytes]:
    """``flow_steps.parquet``, ``flow_classes.parquet``, ``flow_features.parquet`` (typed
    schemas, empty tables included) from the rows of :func:`otaudit.audit.explain.flow_rows`."""
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
        table = pa.Table.from_pylist(tables.get(name, []), schema=pa.schema(head + cols))
        out[f"{name}.parquet"] = table_bytes(table)
    return out


def explain_run(
    plan: AuditPlan,
    refs: list[Any],
    pair_rows: list[dict[str, Any]],
    dataset_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """Explain the chosen pairs (:func:`explained_pairs`) with OTDD gradient flows.

    Returns ``{"pairs": [[a, b], ...], "section": markdown for summary.md, "images":
    [markdown image lines], "files": {report file name: bytes}}`` (``flow_steps.parquet``,
    ``flow_classes.parquet``, ``flow_features.parquet``, ``flow_<a>__<b>.png`` per pair and,
    with ``export: true``, ``flowed_<a>__<b>.parquet``). ``{}`` without ``explain:``.
    """
    import torch

    from .. import otdd_flow

    spec = plan.manifest.explain
    if spec is None:
        return {}
    pairs = explained_pairs(plan, pair_rows, dataset_rows)
    by_name = {s.name: r for s, r in zip(plan.manifest.datasets, refs, strict=True)}
    otdd = plan.manifest.measures.otdd
    inner = otdd.inner if otdd is not None else config.OTDD_INNER
    lx = otdd.lambda_x if otdd is not None else config.LAMBDA_X
    ly = otdd.lambda_y if otdd is not None else config.LAMBDA_Y
    load = Loader(plan, plan.cache(), torch.device("cpu"))
    loaded: dict[str, tuple[np.ndarray, Any]] = {}

    def data(name: str) -> tuple[np.ndarray, Any]:
        if name not in loaded:
            s = load("stats", by_name[name])
            X = s.features.numpy()
            if s.labeled:
                cls = np.empty(s.n_classes, dtype=object)
                cls[:] = list(s.classes)
                loaded[name] = (X, cls[s.codes.numpy()])
            else:
                loaded[name] = (X, None)
        return loaded[name]

    tables: dict[str, list[dict[str, Any]]] = {n: [] for n in ("flow_steps", "flow_classes")}
    tables["flow_features"] = []
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
            r = otdd_flow(
                Xa, ya, Xb, yb, steps=spec.steps, step_size=spec.step_size, mode=spec.mode,
                inner=inner, solver=spec.solver, lambda_x=lx, lambda_y=ly, names=(a, b),
                trajectory_sample=spec.trajectory_sample, **spec.options,
            )  # fmt: skip
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
        images.append(f"![{a} → {b}](data:image/png;base64,{base64.b64encode(png).decode()})")
        if spec.export:
            ylab = None if ya is None else np.asarray([str(v) for v in ya])
            flowed = dataset_table(f"flowed_{a}__{b}", np.asarray(r.X), ylab)
            files[f"flowed_{a}__{b}.parquet"] = table_bytes(flowed)
        done.append([a, b])
    files.update(flow_tables(plan.run_id, tables))
    return {
        "pairs": done,
        "section": explain_section(paragraphs, plots),
        "images": images,
        "files": files,
    }
