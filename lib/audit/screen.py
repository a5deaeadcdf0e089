"""Screening: rank pairs by a cheap estimate before certified measures are spent on them.

The manifest's ``screen: {keep: K, order: nearest|farthest}`` computes the ``sliced``
estimate (:func:`otaudit.sliced_otdd`, ``certified=False``) for every selected pair, then
the other measures only for the ``K`` pairs that :func:`screened_pairs` keeps. Pure
functions on report rows (dicts with ``dataset_a``, ``dataset_b``, ``measure``, ``value``,
``status``): no orchestration here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import config
from ..errors import InputError

__all__ = ["SCREEN_MEASURE", "screened_pairs"]

#: The measure whose estimate ranks the pairs.
SCREEN_MEASURE = "sliced"


def screened_pairs(
    rows: Iterable[Mapping[str, Any]],
    pairs: Sequence[tuple[str, str]],
    keep: int,
    order: str = config.SCREEN_ORDER,
    measure: str = SCREEN_MEASURE,
) -> list[tuple[str, str]]:
    """The pairs to keep, best first: the ``keep`` smallest (``order="nearest"``) or largest
    (``"farthest"``) ``value`` of ``measure`` among ``rows``.

    Only pairs of ``pairs`` with an ``ok`` row and a finite value take part: a failed
    estimate is never kept (its pair stays a failed row). Ties are broken by the order of
    ``pairs`` (manifest order). Fewer than ``keep`` candidates: all of them are kept.
    """
    if order not in ("nearest", "farthest"):
        raise InputError(
            f"unknown screening order {order!r}",
            field="screen.order",
            fix="use 'nearest' or 'farthest'",
        )
    if keep < 1:
        raise InputError(
            f"screen.keep must be >= 1, got {keep}", field="screen.keep", fix="keep at least 1 pair"
        )
    index = {tuple(p): i for i, p in enumerate(pairs)}
    value: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.get("measure") != measure or r.get("status", "ok") != "ok":
            continue
        p = (r["dataset_a"], r["dataset_b"])
        v = r.get("value")
        if p in index and v is not None and math.isfinite(float(v)):
            value[p] = float(v)
    sign = 1.0 if order == "nearest" else -1.0
    ranked = sorted(value, key=lambda p: (sign * value[p], index[p]))
    return ranked[:keep]
