"""The heatmap of a report (``heatmap.png``) and the distance matrices it shares with the
summary: ``sqrt(value)`` per measure, one annotated N x N panel per measure."""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..core.result import distance_of

__all__ = [
    "distance",
    "distance_matrix",
    "measure_label",
    "measures_of",
    "render_heatmap",
    "agg_figure",
    "png_bytes",
]


def distance(value: float | None) -> float | None:
    """:func:`otaudit.core.result.distance_of` of a report value (None stays None)."""
    return None if value is None else distance_of(value)


def distance_matrix(
    rows: Iterable[Mapping[str, Any]], names: Sequence[str], measure: str
) -> np.ndarray:
    """Symmetric ``[N, N]`` distance matrix (``nan`` = not computed; 0 on the diagonal)."""
    idx = {n: i for i, n in enumerate(names)}
    M = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(M, 0.0)
    for r in rows:
        if r["measure"] != measure or r.get("status", "ok") != "ok":
            continue
        i, j = idx.get(r["dataset_a"]), idx.get(r["dataset_b"])
        if i is None or j is None:
            continue
        M[i, j] = M[j, i] = distance(r["value"])
    return M


def measure_label(measure: str) -> str:
    """What ``sqrt(value)`` of a measure is, for headings and plot titles."""
    return {"otdd": "OTDD", "sliced": "sliced estimate"}.get(measure, "W2")


def measures_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The measures of ``rows``, in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(r["measure"], None)
    return list(seen)


def render_heatmap(
    *, pair_rows: Sequence[Mapping[str, Any]], names: Sequence[str], title: str = ""
) -> bytes:
    """PNG bytes: one annotated distance heatmap per measure (matplotlib, Agg canvas)."""
    measures = measures_of(pair_rows) or ["otdd"]
    n = max(len(names), 1)
    size = 1.2 + 0.55 * n
    fig = agg_figure((size * len(measures) + 1.0, size + 0.8))
    for k, m in enumerate(measures):
        ax = fig.add_subplot(1, len(measures), k + 1)
        M = distance_matrix(pair_rows, names, m)
        im = ax.imshow(np.ma.masked_invalid(M), cmap="viridis")
        ax.set_xticks(range(len(names)), labels=list(names), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), labels=list(names), fontsize=8)
        ax.set_title(f"{m} ({measure_label(m)})", fontsize=10)
        finite = M[np.isfinite(M)]
        hi = float(finite.max()) if finite.size else 1.0
        for i in range(len(names)):
            for j in range(len(names)):
                v = M[i, j]
                txt = "×" if not np.isfinite(v) else f"{v:.2g}"
                color = "white" if np.isfinite(v) and v < 0.5 * hi else "black"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7, color=color)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return png_bytes(fig, title)


def agg_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` (100 dpi) on an Agg canvas: no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any, title: str = "") -> bytes:
    """``fig`` (from :func:`agg_figure`) with its title, laid out, as PNG bytes."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
