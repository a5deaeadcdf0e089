"""Exact row-wise k smallest of a large block, faster than ``torch.topk`` for small k.

The row is cut into groups of ``config.TOPK_GROUP`` columns. The ``k`` smallest entries lie
in the ``k`` groups of smallest minimum: a group holding one of them has its minimum at most
the ``k``-th smallest value ``v``; were it not among the ``k`` groups of smallest minimum,
those ``k`` groups' minima and that entry would be ``k + 1`` entries ``<= v`` (for distinct
values; with ties the set of ``k`` smallest is not unique, and the values found are still
the ``k`` smallest). So one group minimum per row (a contiguous reduction) and a top-k over
``k`` groups' entries find them: at 50 000 columns and ``k = 8``, 0.81 s per 2.5e9 entries
against 3.48 s for ``torch.topk`` (one thread, this project's 2-core Xeon).
"""

from __future__ import annotations

import math

import torch

from .. import config

__all__ = ["smallest_k"]


def smallest_k(B: torch.Tensor, k: int, group: int | None = None) -> torch.Tensor:
    """Column indices ``[rows, k]`` of the ``k`` smallest entries of each row of ``B`` (their
    values are exactly the ``k`` smallest, in ascending order; the order among ties is
    unspecified)."""
    r, w = B.shape
    k = min(int(k), w)
    group = int(group or config.TOPK_GROUP)
    if k == 0 or r == 0:
        return torch.zeros(r, k, dtype=torch.long, device=B.device)
    if w < 4 * group * k:
        return torch.topk(B, k, dim=1, largest=False).indices
    ng = w // group
    gmin = B[:, : ng * group].reshape(r, ng, group).amin(dim=2)
    if ng * group < w:  # the last, shorter group
        gmin = torch.cat([gmin, B[:, ng * group :].amin(dim=1, keepdim=True)], 1)
    top = torch.topk(gmin, k, dim=1, largest=False).indices
    cols = (top[:, :, None] * group + torch.arange(group, device=B.device)).reshape(r, -1)
    valid = cols < w  # the last group's padding
    cols = cols.clamp(max=w - 1)
    vals = B.gather(1, cols).masked_fill_(~valid, math.inf)
    sel = torch.topk(vals, k, dim=1, largest=False).indices
    return cols.gather(1, sel)
