"""Explanations in the audit report: what an OTDD gradient flow (:func:`otaudit.otdd_flow`)
says about a drifted pair, as table rows, a summary paragraph and a plot.

For a pair ``(a, b)`` the flow moves ``a`` toward ``b``. The report gains

- ``flow_steps.parquet``: ``run_id, dataset_a, dataset_b, step, value, lower, upper, ratio,
  plan_cost, feature_part, label_part, plan_changed``;
- ``flow_classes.parquet``: ``run_id, dataset_a, dataset_b, class_a, class_b, mass, frac_a,
  frac_b, feature_cost, label_cost, cost_share`` (class labels as strings);
- ``flow_features.parquet``: ``run_id, dataset_a, dataset_b, feature, share, cost, rank``;
- a section of ``summary.md`` (:func:`explain_paragraph`) and per pair a PNG
  (:func:`render_flow_plot`): OTDD²_k / OTDD²_0 on a log axis beside a 2-D projection (the
  two leading principal axes of the start and end points) of sampled trajectories coloured
  by class.

This module is pure (numpy, matplotlib's Agg canvas); writing the tables is the report's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import config
from ..dataset_distance.flow import FlowResult
from .heatmap import agg_figure, png_bytes

__all__ = [
    "STEP_COLUMNS",
    "CLASS_COLUMNS",
    "FEATURE_COLUMNS",
    "flow_rows",
    "explain_paragraph",
    "explain_section",
    "render_flow_plot",
    "plot_name",
    "verdict",
    "summarize_flows",
]

STEP_COLUMNS = (
    "step",
    "value",
    "lower",
    "upper",
    "ratio",
    "plan_cost",
    "feature_part",
    "label_part",
    "plan_changed",
)
CLASS_COLUMNS = (
    "class_a",
    "class_b",
    "mass",
    "frac_a",
    "frac_b",
    "feature_cost",
    "label_cost",
    "cost_share",
)
FEATURE_COLUMNS = ("feature", "share", "cost", "rank")


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def flow_rows(
    result: FlowResult, *, run_id: str, dataset_a: str, dataset_b: str
) -> dict[str, list[dict[str, Any]]]:
    """Rows of ``flow_steps``, ``flow_classes`` and ``flow_features`` for one explained pair
    (plain Python values; class labels as strings so one column type serves every pair)."""
    head = {"run_id": run_id, "dataset_a": dataset_a, "dataset_b": dataset_b}
    fr = result.to_frames()
    out: dict[str, list[dict[str, Any]]] = {}
    st = fr["flow_steps"]
    out["flow_steps"] = [
        {**head, **{c: _plain(st[c][k]) for c in STEP_COLUMNS}} for k in range(len(st["step"]))
    ]
    cl = fr["flow_classes"]
    out["flow_classes"] = [
        {
            **head,
            **{
                c: (str(cl[c][k]) if c in ("class_a", "class_b") else _plain(cl[c][k]))
                for c in CLASS_COLUMNS
            },
        }
        for k in range(len(cl["class_a"]))
    ]
    fe = fr["flow_features"]
    rank = np.empty(len(fe["feature"]), dtype=np.int64)
    rank[np.argsort(-fe["share"], kind="stable")] = np.arange(1, len(rank) + 1)
    out["flow_features"] = [
        {
            **head,
            "feature": int(fe["feature"][k]),
            "share": _plain(fe["share"][k]),
            "cost": _plain(fe["cost"][k]),
            "rank": int(rank[k]),
        }
        for k in range(len(fe["feature"]))
    ]
    return out


def verdict(result: FlowResult, shift: float = config.FLOW_RESIDUAL_SHIFT) -> str:
    """``"covariate shift"`` when the residual is at most ``shift`` (moving the features
    along the plan removes almost all of OTDD²), else ``"class structure"``."""
    return "covariate shift" if result.residual <= shift else "class structure"


def _pct(x: float) -> str:
    p = 100.0 * x
    return f"{p:.0f} %" if p >= 9.5 or p == 0 else f"{p:.1f} %"


def _label(v: Any) -> str:
    return str(v)


def explain_paragraph(
    result: FlowResult,
    dataset_a: str,
    dataset_b: str,
    *,
    top_features: int = config.FLOW_TOP_FEATURES,
    feature_names: Sequence[str] | None = None,
) -> str:
    """One paragraph: where the classes go, which features carry the distance, the residual.

    E.g. "vendor_b's class 3 takes 61 % of its mass from vendor_a's class 8; features carry
    52 % of OTDD², 74 % of it in features 12, 40, 7; residual 2 %: a covariate shift".
    """
    t = result.class_table
    v0 = float(result.values[0])
    parts: list[str] = []
    if v0 <= 0:
        return (
            f"**{dataset_a} → {dataset_b}**: OTDD² = 0, nothing to explain "
            "(the datasets coincide up to row order and label names)."
        )
    share = np.asarray(t["cost_share"])
    ca, cb = list(t["class_a"]), list(t["class_b"])
    frac_a, frac_b = np.asarray(t["frac_a"]), np.asarray(t["frac_b"])
    # the class pair carrying most of the cost
    i = int(np.argmax(share))
    parts.append(
        f"{dataset_b}'s class {_label(cb[i])} takes {_pct(frac_b[i])} of its mass from "
        f"{dataset_a}'s class {_label(ca[i])} ({_pct(share[i])} of OTDD²)"
    )
    # classes of a that split over several classes of b (their largest destination < 90 %)
    split = []
    for c in dict.fromkeys(ca):
        rows = [k for k in range(len(ca)) if ca[k] == c]
        best = max(rows, key=lambda k: frac_a[k])
        if frac_a[best] < 0.9:
            split.append((c, rows))
    if split:
        c, rows = split[0]
        dest = sorted(rows, key=lambda k: -frac_a[k])[:3]
        more = f" ({len(split)} classes of {dataset_a} split like this)" if len(split) > 1 else ""
        parts.append(
            f"{dataset_a}'s class {_label(c)} splits over {dataset_b}'s classes "
            + ", ".join(f"{_label(cb[k])} ({_pct(frac_a[k])})" for k in dest)
            + more
        )
    ff = result.feature_fraction
    top = result.top_features(top_features)
    names = [
        feature_names[j] if feature_names is not None and j < len(feature_names) else str(j)
        for j, _ in top
    ]
    parts.append(
        f"features carry {_pct(ff)} of OTDD², {_pct(sum(s for _, s in top))} of it in "
        f"feature{'s' if len(top) > 1 else ''} {', '.join(names)}"
    )
    kind = verdict(result)
    why = (
        "moving the features, classes fixed, removes almost all of it"
        if kind == "covariate shift"
        else "classes must split, merge or change proportion"
    )
    along = "the OTDD plan" if result.residual_plan == "otdd" else "the class-respecting plan"
    parts.append(f"residual {_pct(result.residual)} (along {along}): {kind} ({why})")
    lead = (
        f"**{dataset_a} → {dataset_b}** (OTDD² {v0:.4g}; after {result.steps} "
        f"{result.mode} steps of {result.step_size:g}: {_pct(float(result.ratios[-1]))} left): "
    )
    return lead + "; ".join(parts) + "."


def plot_name(dataset_a: str, dataset_b: str) -> str:
    """File name of a pair's flow plot inside the report."""
    return f"flow_{dataset_a}__{dataset_b}.png"


def explain_section(paragraphs: Sequence[str], plots: Sequence[str] = ()) -> str:
    """The ``summary.md`` section for the explained pairs."""
    out = ["## What moved (OTDD gradient flows)", ""]
    if not paragraphs:
        out += ["No pair was explained (none flagged and none named under `explain.pairs`).", ""]
        return "\n".join(out)
    out.append(
        "Each explained pair's first dataset flows toward the second along the OTDD plan "
        "(classes fixed, class statistics recomputed each step). The residual is the share "
        "of OTDD² left when every point is moved all the way to its target, along the OTDD "
        "plan or along the class-respecting plan (class proportions matched by OT), "
        "whichever leaves less."
    )
    out.append("")
    for p in paragraphs:
        out += [f"- {p}"]
    if plots:
        out += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots)]
    out.append("")
    return "\n".join(out)


def _projection(P: np.ndarray) -> np.ndarray:
    """``[d, 2]`` leading principal axes of the points ``P [N, d]`` (identity-padded)."""
    d = P.shape[1]
    if d <= 2:
        return np.eye(d, 2)
    Z = P - P.mean(0)
    _, _, Vt = np.linalg.svd(Z, full_matrices=False)
    return Vt[:2].T


def render_flow_plot(
    result: FlowResult,
    *,
    title: str = "",
    target: np.ndarray | None = None,
    max_classes: int = 10,
) -> bytes:
    """PNG bytes: OTDD²_k / OTDD²_0 (log axis, with the certified bracket) beside a 2-D
    projection of the sampled trajectories coloured by class (``target``: B's points, drawn
    in grey when given)."""
    import matplotlib

    fig = agg_figure((10, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    k = np.arange(result.steps + 1)
    v0 = float(result.values[0])
    if v0 > 0:
        floor = 1e-16
        ax.semilogy(k, np.maximum(result.values / v0, floor), "o-", label="OTDD²_k / OTDD²_0")
        ax.fill_between(
            k,
            np.maximum(result.lower / v0, floor),
            np.maximum(result.upper / v0, floor),
            alpha=0.25,
            label="certified bracket",
        )
        if result.residual > 0:
            ax.axhline(result.residual, ls="--", c="grey", label=f"residual {result.residual:.3g}")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "OTDD² = 0", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step k")
    ax.set_title(f"{result.mode}, step size {result.step_size:g}", fontsize=10)
    ax2 = fig.add_subplot(1, 2, 2)
    tr = np.asarray(result.trajectory)  # [K+1, s, d]
    P = np.concatenate([tr[0], tr[-1]] + ([np.asarray(target)] if target is not None else []))
    W = _projection(P)
    if target is not None:
        Tb = np.asarray(target) @ W
        ax2.scatter(Tb[:, 0], Tb[:, 1], s=4, c="lightgrey", label="target")
    labels = np.asarray(result.trajectory_labels, dtype=object)
    classes = sorted(dict.fromkeys(labels.tolist()), key=str)
    colours = matplotlib.colormaps["tab10"]
    for ci, c in enumerate(classes[:max_classes]):
        sel = labels == c
        path = tr[:, sel, :] @ W  # [K+1, s_c, 2]
        col = colours(ci % 10)
        for p in range(path.shape[1]):
            ax2.plot(path[:, p, 0], path[:, p, 1], "-", c=col, lw=0.5, alpha=0.5)
        ax2.scatter(path[-1, :, 0], path[-1, :, 1], s=6, c=[col], label=str(c))
    ax2.set_title("sampled trajectories (2 principal axes)", fontsize=10)
    if len(classes) <= 12:
        ax2.legend(fontsize=6, markerscale=2, ncol=2)
    return png_bytes(fig, title)


def summarize_flows(
    explained: Mapping[tuple[str, str], FlowResult],
    *,
    top_features: int = config.FLOW_TOP_FEATURES,
) -> list[str]:
    """One paragraph per explained pair, in the given order."""
    return [
        explain_paragraph(r, a, b, top_features=top_features) for (a, b), r in explained.items()
    ]
