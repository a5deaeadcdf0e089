"""The sparse route's candidate search (lib/core/candidates.py, lib/core/topk.py) and the
hoisted fast-block operands, against dense oracles.

Oracles: ``torch.topk`` (exact k smallest values), a dense float64 matrix of reduced costs
(the k smallest per row / column), the brute-force c-transform ``min_x C - f`` and
:func:`otaudit.core.costs.c_transform` itself (the fused passes must give its result to the
bit), and :meth:`SqEuclidean.lower_block` (the hoisted operands must give its blocks to the bit).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.families import make
from otaudit import config
from otaudit.core.candidates import first_pass, smallest_reduced, transform_neighbours
from otaudit.core.costs import SqEuclidean, _exact_candidates, c_transform, transform_tiles
from otaudit.core.partition import kmeans
from otaudit.core.sparse import initial_potentials
from otaudit.core.topk import smallest_k


def _problem(name: str, n: int):
    p = make(name, n, seed=4)
    cost = SqEuclidean(torch.from_numpy(p.X), torch.from_numpy(p.Y))
    a = torch.full((cost.n,), 1.0 / cost.n, dtype=torch.float64)
    b = torch.full((cost.m,), 1.0 / cost.m, dtype=torch.float64)
    return cost, initial_potentials(cost, a, b)


@pytest.mark.parametrize("w", [5, 700, 4096, 50_000 // 7])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_smallest_k_finds_exactly_the_k_smallest_in_order(w, k):
    gen = torch.Generator().manual_seed(w + k)
    B = torch.randn(37, w, generator=gen)
    B[3] = 1.0  # all ties
    B[4, ::3] = -5.0  # many ties at the minimum
    got = smallest_k(B, k, group=16)
    ref = torch.topk(B, min(k, w), dim=1, largest=False).values
    vals = B.gather(1, got)
    assert torch.equal(vals, ref)  # the same values, ascending (the order of topk)
    assert all(len(set(r.tolist())) == r.numel() for r in got)  # distinct columns


@pytest.fixture
def small_blocks(monkeypatch):
    """A budget that cuts the 3 000-point problems into ~13-23 whole-row tiles."""
    monkeypatch.setattr(config, "COST_BLOCK_BYTES", 2**22)


@pytest.mark.parametrize("name", ["clusters", "plane", "duplicates", "student_t"])
def test_first_pass_equals_separate_passes(name, small_blocks):
    cost, f = _problem(name, 3000)
    rows, cols = transform_tiles(cost.m, cost.n, None, fast=True)
    assert cols == cost.n and rows < cost.m  # the fused path, several tiles
    g, I, J = first_pass(cost, f, 8)
    g_ref = c_transform(cost, f, side="x", fast=True)
    assert torch.equal(g, g_ref)  # the same exact c-transform, to the bit
    C = cost.block(None, None)
    # against the float64 dense block: its own round-off, 1e-12 of the largest entry
    assert torch.allclose(g, (C - f[:, None]).min(0).values, rtol=0, atol=1e-12 * float(C.max()))
    R = C - f[:, None] - g[None, :]
    m, n = cost.m, cost.n
    Iy, Jy, Ix, Jx = I[: 8 * m], J[: 8 * m], I[8 * m :], J[8 * m :]
    # each side: 8 distinct partners per point, each within float32 rounding of the
    # 8 smallest reduced costs (the blocks are float32: 1e-6 of the largest entry)
    tol = 1e-6 * float(R.abs().max())
    kth_y = torch.topk(R, 8, dim=0, largest=False).values[-1]
    kth_x = torch.topk(R, 8, dim=1, largest=False).values[:, -1]
    assert (R[Iy, Jy] <= kth_y[Jy] + tol).all()
    assert (R[Ix, Jx] <= kth_x[Ix] + tol).all()
    assert len(set(zip(Iy.tolist(), Jy.tolist(), strict=True))) == 8 * m
    assert len(set(zip(Ix.tolist(), Jx.tolist(), strict=True))) == 8 * n
    # the same neighbours (up to float32 near-ties) as the blockwise search
    Ix2, Jx2 = smallest_reduced(cost, f, g, 8, side="x")
    assert (R[Ix2, Jx2] <= kth_x[Ix2] + tol).all()


def test_transform_neighbours_is_the_pricing_c_transform(small_blocks):
    cost, f = _problem("plane", 3000)
    g, near = transform_neighbours(cost, f, 4)
    assert torch.equal(g, c_transform(cost, f, side="x", fast=True))
    R = cost.block(None, None) - f[:, None]
    kth = torch.topk(R, 4, dim=0, largest=False).values[-1]
    y = torch.arange(cost.m)[:, None].expand(-1, 4)
    assert (R[near, y] <= kth[y] + 1e-6 * float(R.abs().max())).all()


def test_exact_candidates_uses_the_known_smallest_without_changing_a_bit():
    """2-d, 4 000 points: many rows have several entries within the margin of their minimum
    (the case a wrong row alignment once broke: the known smallest must be read from the
    same row)."""
    cost, f = _problem("plane", 4000)
    ops = cost.lower_operands(None, None, f, None)
    B = ops.block(None, slice(0, 400), transposed=True)
    ref = (cost.block(None, slice(0, 400)) - f[:, None]).min(0).values
    out2 = _exact_candidates(B, ops.margin, f, cost.Y[:400], cost.X, smallest_k(B, 2))
    out8 = _exact_candidates(B, ops.margin, f, cost.Y[:400], cost.X, smallest_k(B, 8))
    assert out2 is not None and out8 is not None
    assert torch.equal(out2, out8)
    assert torch.allclose(out8, ref, rtol=0, atol=1e-12 * float(ref.abs().max() + f.abs().max()))


def test_hoisted_operands_give_lower_block_to_the_bit():
    cost, f = _problem("clusters", 500)
    g = torch.linspace(-1, 1, cost.m, dtype=torch.float64)
    B, margin = cost.lower_block(None, None, f, g)
    ops = cost.lower_operands(None, None, f, g)
    assert torch.equal(ops.block(), B) and ops.margin == margin
    assert torch.equal(
        ops.block(None, None, transposed=True),
        cost.lower_block(None, None, f, g, transposed=True)[0],
    )
    # a sub-block of the hoisted operands stays within the (global) margin of the truth
    C = cost.block(slice(0, 50), slice(100, 300)) - f[:50, None] - g[None, 100:300]
    sub = ops.block(slice(0, 50), slice(100, 300)).to(torch.float64)
    assert ((sub - C).abs() <= ops.margin).all()


def test_kmeans_kdtree_assignment_matches_matmul():
    gen = torch.Generator().manual_seed(0)
    Z = torch.rand(3000, 2, generator=gen, dtype=torch.float64)
    w = torch.full((3000,), 1 / 3000, dtype=torch.float64)
    l1, c1 = kmeans(Z, w, 40, torch.Generator().manual_seed(1), n_iter=4)
    l2, c2 = kmeans(Z, w, 40, torch.Generator().manual_seed(1), n_iter=4, nearest="kdtree")
    assert torch.equal(l1, l2)  # continuous data: no ties, the same clustering
    assert torch.allclose(c1, c2, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="nearest"):
        kmeans(Z, w, 4, gen, nearest="ball")
