""" "labels permuted": a near-duplicate OTDD pair whose classes correspond crosswise.

OTDD compares classes by their point clouds, not by their names, so a copy of a dataset with
its class labels renamed through a permutation scores OTDD = 0, a near-duplicate. The
summary says so when the class correspondence is not the identity on the class names both
datasets share (names compared without the prefix/suffix common to all of a dataset's class
names: the demo's ``digit-7`` is class ``7``).

The OTDD result does not carry its plan's class-to-class mass, so the correspondence is
computed here, cheaply and only for the near-duplicate OTDD pairs of a run: a one-to-one
matching of the two datasets' classes minimising the total squared distance between class
means (:func:`scipy.optimize.linear_sum_assignment`; ``K_a x K_b`` means, no OT solve). For a
near-duplicate pair (OTDD ≈ 0, hence matching class clouds) it is the class map of the OTDD
plan. It is recorded in the pair's ``params`` (``class_correspondence`` as ``[[class_a,
class_b], ...]``, ``labels_permuted``, ``class_correspondence_method``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import config
from .heatmap import distance

__all__ = [
    "class_correspondence",
    "canonical_names",
    "is_permuted",
    "annotate_permutations",
    "METHOD",
]

METHOD = "class-means linear_sum_assignment"


def class_correspondence(
    classes_a: Sequence[Any], means_a: Any, classes_b: Sequence[Any], means_b: Any
) -> list[list[str]]:
    """``[[class_a, class_b], ...]`` (labels as strings): the one-to-one matching of classes
    with the least total squared distance between class means."""
    from scipy.optimize import linear_sum_assignment

    A = np.asarray(means_a, dtype=np.float64)
    B = np.asarray(means_b, dtype=np.float64)
    cost = ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return [[str(classes_a[i]), str(classes_b[j])] for i, j in zip(rows, cols, strict=True)]


def canonical_names(classes: Sequence[Any]) -> dict[str, str]:
    """``label -> name`` with the prefix and suffix common to all of a dataset's class names
    removed (``digit-3`` among ``digit-0..9`` is ``3``), so that ``3`` and ``digit-3`` are
    the same class name for the permutation check."""
    names = [str(c) for c in classes]
    if len(names) < 2:
        return {n: n for n in names}
    pre = os.path.commonprefix(names)
    suf = os.path.commonprefix([n[len(pre) :][::-1] for n in names])[::-1]
    out = {n: n[len(pre) : len(n) - len(suf)] for n in names}
    return out if all(out.values()) else {n: n for n in names}


def is_permuted(
    correspondence: Sequence[Sequence[str]],
    classes_b: Sequence[Any],
    classes_a: Sequence[Any] | None = None,
) -> bool:
    """Whether a class name both datasets have (compared by :func:`canonical_names`) is
    matched to another class."""
    ca = canonical_names(classes_a if classes_a is not None else [a for a, _ in correspondence])
    cb = canonical_names(classes_b)
    names_b = set(cb.values())
    return any(ca[a] in names_b and ca[a] != cb[b] for a, b in correspondence)


def annotate_permutations(
    pair_rows: list[dict[str, Any]],
    stats_of: Callable[[str], Any],
    near_fraction: float = config.NEAR_DUPLICATE_FRACTION,
) -> int:
    """Add the class correspondence to the ``params`` of every near-duplicate labelled OTDD
    row (distance below ``near_fraction`` × the median OTDD of the run, the summary's rule,
    or exactly 0). ``stats_of(name)`` returns a dataset's statistics (``classes``, ``means``,
    ``labeled``) or None. Returns the number of rows found permuted."""
    ok = [r for r in pair_rows if r["measure"] == "otdd" and r.get("status", "ok") == "ok"]
    d = [distance(r["value"]) for r in ok if r.get("value") is not None]
    med = float(np.median(d)) if d else math.nan
    n_permuted = 0
    for r in ok:
        dist = distance(r["value"])
        if dist is None or not (dist == 0.0 or (med > 0 and dist < near_fraction * med)):
            continue
        sa, sb = stats_of(r["dataset_a"]), stats_of(r["dataset_b"])
        if sa is None or sb is None or not (sa.labeled and sb.labeled):
            continue
        corr = class_correspondence(sa.classes, _np(sa.means), sb.classes, _np(sb.means))
        permuted = is_permuted(corr, sb.classes, sa.classes)
        params = json.loads(r.get("params") or "{}")
        params.update(
            class_correspondence=corr, labels_permuted=permuted, class_correspondence_method=METHOD
        )
        r["params"] = json.dumps(params, sort_keys=True, default=str)
        n_permuted += permuted
    return n_permuted


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
