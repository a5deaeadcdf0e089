"""Partitions of two point clouds into weighted blocks for mini-batch OT bounds.

A block is a weighted sub-measure ``mu_k = sum_p w_kp delta_{x_p}``; the blocks of one side
sum to that side's measure (``sum_k mu_k = a``): points are never dropped or padded, and a
point may be split fractionally between blocks (the OT-aware aligned partition does so).
Each point also gets one disjoint ``label`` (the block holding most of its mass), used by
the block-level LP correction of the lower bound, which needs a disjoint partition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from . import parallel
from .costs import chunk_size, row_chunks
from .exact import emd

__all__ = [
    "Blocks",
    "Heaviest",
    "heaviest_piece",
    "make_blocks",
    "random_blocks",
    "kmeans",
    "aligned_pieces",
]


@dataclass
class Blocks:
    """Weighted blocks of one side: ``idx[k]`` (long ``[s_k]``) and ``w[k]`` (float64 ``[s_k]``,
    positive) with ``sum_k scatter(w[k]) == a``; ``label [n]`` a disjoint block id per point."""

    idx: list[torch.Tensor]
    w: list[torch.Tensor]
    label: torch.Tensor

    def __len__(self) -> int:
        return len(self.idx)

    @property
    def mass(self) -> torch.Tensor:
        return torch.stack([w.sum() for w in self.w])


@dataclass
class Heaviest:
    """Per point, the piece holding most of its mass: ``label [n]`` (long), ``weight [n]``
    (float64, ``-1`` where no piece holds the point) and the piece's ``values`` at the point
    (float64 ``[n]``, zeros where uncovered; None when no values were given)."""

    label: torch.Tensor
    weight: torch.Tensor
    values: torch.Tensor | None

    @property
    def covered(self) -> bool:
        """Every point is held by some piece."""
        return bool((self.weight >= 0).all())


def heaviest_piece(
    n: int,
    pieces: Iterable[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]],
    device: torch.device,
) -> Heaviest:
    """Each point keeps the piece holding most of its mass (the first such piece on ties).

    ``pieces``: ``(idx [s], w [s], label, values [s] or None)`` in order; point ``idx[t]``
    has mass ``w[t]`` in the piece. Used for the disjoint block labels of a partition, and to
    stitch block duals into potentials on all points (the lower bound needs one value and one
    disjoint label per point; any choice is valid, the heaviest keeps the bound tight)."""
    best = torch.full((n,), -1.0, dtype=torch.float64, device=device)
    lab = torch.zeros(n, dtype=torch.long, device=device)
    vals: torch.Tensor | None = None
    for i, w, k, v in pieces:
        better = w > best[i]
        sel = i[better]
        if v is not None:
            if vals is None:
                vals = torch.zeros(n, dtype=torch.float64, device=device)
            vals[sel] = v[better]
        best[sel] = w[better]
        lab[sel] = k
    return Heaviest(label=lab, weight=best, values=vals)


def _labels_from(
    idx: list[torch.Tensor], w: list[torch.Tensor], n: int, device: torch.device
) -> torch.Tensor:
    pieces = ((i, wk, k, None) for k, (i, wk) in enumerate(zip(idx, w, strict=True)))
    return heaviest_piece(n, pieces, device).label


def random_blocks(n: int, batch_size: int, a: torch.Tensor, gen: torch.Generator) -> Blocks:
    """Shuffle and cut into ``ceil(n / batch_size)`` near-equal blocks (sizes differ by <= 1)."""
    perm = torch.randperm(n, generator=gen).to(a.device)
    # zero-weight points carry no mass: they join no block (an all-zero block has no
    # measure to transport); they still get a label (round-robin) for the lower bound
    pos = perm[a[perm] > 0]
    k = math.ceil(pos.numel() / batch_size)
    idx = list(torch.tensor_split(pos, k))
    w = [a[i] for i in idx]
    lab = torch.empty(n, dtype=torch.long, device=a.device)
    lab[perm] = torch.arange(n, device=a.device) % k
    for j, i in enumerate(idx):
        lab[i] = j
    return Blocks(idx, w, lab)


def kmeans(
    Z: torch.Tensor,
    w: torch.Tensor,
    k: int,
    gen: torch.Generator,
    n_iter: int = 8,
    *,
    init: str = "random",
    nearest: str = "matmul",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Lloyd's k-means, float64 — the one k-means of otaudit (block partitions,
    refinement groups, OTDD pseudo-labels, the sparse route's coarse problem).

    ``init``: ``"random"`` (random distinct points as seeds: cheap, used by the partitions)
    or ``"++"`` (weighted k-means++ seeding drawn from ``gen``: used for pseudo-labels).
    ``nearest``: how each point finds its nearest centroid: ``"matmul"`` (blocks of the
    ``[n, k]`` distances by the norm expansion) or ``"kdtree"`` (scipy's ``cKDTree``, exact
    distances; for low dimensions and many centroids: 50 000 points, 5 000 centroids,
    4 rounds, one thread: 1.2 / 8.5 s against 5.2 / 14.0 s in 16-d (cluster_swap / softplus
    of benchmarks/families.py), but 36.7 s against 6.8 s in 64-d); the two differ only
    where two centroids are within round-off of equally near.
    Returns ``(labels [n], centroids [k', d])`` with empty clusters removed (``k' <= k``).
    """
    if nearest not in ("matmul", "kdtree"):
        raise ValueError(f"nearest must be 'matmul' or 'kdtree', got {nearest!r}")
    n = Z.shape[0]
    k = max(1, min(k, n))
    Z = Z.to(torch.float64)
    if init == "++":
        cent = _plusplus_seeds(Z, w.to(torch.float64), k, gen)
        k = cent.shape[0]
    else:
        cent = Z[torch.randperm(n, generator=gen)[:k].to(Z.device)].clone()
    lab = torch.zeros(n, dtype=torch.long, device=Z.device)
    zn = (Z * Z).sum(1)
    # the [n, k] distances are computed in row chunks within config.COST_BLOCK_BYTES
    # (k ~ n / batch_size: a dense [n, k] would be O(n^2) memory, 7.5 GB at 2 x 200k points)
    rows = chunk_size(k)
    tiles = list(row_chunks(n, rows))
    pool = parallel.current()
    if pool is not None and (nearest == "kdtree" or Z.device.type != "cpu" or len(tiles) < 2):
        pool = None
    shared = None if pool is None else pool.share((Z, zn))
    Z_np = Z.cpu().numpy() if nearest == "kdtree" else None
    for _ in range(n_iter):
        if Z_np is not None:
            from scipy.spatial import cKDTree

            _, near = cKDTree(cent.cpu().numpy()).query(Z_np, k=1)
            lab = torch.from_numpy(near.astype("int64")).to(Z.device)
        else:
            cn = (cent * cent).sum(1)
            if pool is None:
                for sl in tiles:
                    lab[sl] = _nearest(Z, zn, cent, cn, sl)
            else:  # the assignment chunks side by side (identical rows, identical labels)
                chunks = parallel.chunked(tiles, pool.n_chunks(len(tiles)))
                found = pool.map(_nearest_chunk, chunks, shared, cent, cn)
                for sl, lab_sl in zip(tiles, found, strict=True):
                    lab[sl] = lab_sl
        s = torch.zeros(k, Z.shape[1], dtype=torch.float64, device=Z.device)
        s.index_add_(0, lab, Z * w[:, None])
        m = torch.zeros(k, dtype=torch.float64, device=Z.device).index_add_(0, lab, w)
        ok = m > 0
        cent[ok] = s[ok] / m[ok, None]
    return _restrict(lab, cent)


def _nearest(
    Z: torch.Tensor, zn: torch.Tensor, cent: torch.Tensor, cn: torch.Tensor, sl: slice
) -> torch.Tensor:
    """Index of the nearest centroid of the rows ``sl`` of ``Z`` (``zn``, ``cn``: squared
    norms)."""
    return (zn[sl, None] + cn[None, :] - 2.0 * Z[sl] @ cent.T).argmin(1)


def _nearest_chunk(
    data: tuple[torch.Tensor, torch.Tensor], cent: torch.Tensor, cn: torch.Tensor, tiles: list
) -> list[torch.Tensor]:
    """One submitted task of the k-means assignment: its row tiles, in order."""
    Z, zn = data
    return [_nearest(Z, zn, cent, cn, sl) for sl in tiles]


def _plusplus_seeds(Z: torch.Tensor, w: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Weighted k-means++ seeds (Arthur & Vassilvitskii 2007): the first drawn with
    probability ``w``, each next with probability ``w * D^2`` (``D`` the distance to the
    nearest seed so far). Fewer than ``k`` seeds when fewer distinct points carry mass."""
    first = int(torch.multinomial(w.cpu(), 1, generator=gen))
    seeds = [first]
    d2 = ((Z - Z[first]) ** 2).sum(1)
    for _ in range(1, k):
        p = (w * d2).cpu()
        if not float(p.sum()) > 0:
            break
        j = int(torch.multinomial(p, 1, generator=gen))
        seeds.append(j)
        d2 = torch.minimum(d2, ((Z - Z[j]) ** 2).sum(1))
    return Z[seeds].clone()


def _split_by_destination(
    Z: torch.Tensor, w: torch.Tensor, dest: torch.Tensor, cap: torch.Tensor
) -> torch.Tensor:
    """Split points ``Z [s, d]`` with masses ``w [s]`` among destinations ``dest [r, d]`` with
    capacities ``cap [r]`` (``sum cap == sum w``) by an exact transport with cost
    ``||z - dest||^2``; returns the ``[s, r]`` mass matrix (rows sum to ``w``)."""
    if cap.numel() == 1:
        return w[:, None].clone()
    C = ((Z[:, None, :] - dest[None, :, :]) ** 2).sum(-1)
    tot = w.sum()
    P = torch.from_numpy(emd(w / tot, cap / cap.sum(), C).plan).to(w.device) * tot
    # entries at round-off level of a point's weight are moved to its largest entry, and
    # row sums are made exact (float64 round-off of the LP): residual on the largest entry
    P[P < 1e-12 * w[:, None]] = 0.0
    resid = w - P.sum(1)
    P[torch.arange(P.shape[0], device=w.device), P.argmax(1)] += resid
    return P.clamp(min=0.0)


def _restrict(lab: torch.Tensor, cent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only the clusters used by ``lab``; relabel them ``0..k'-1``."""
    used = torch.unique(lab)
    remap = torch.full((cent.shape[0],), -1, dtype=torch.long, device=lab.device)
    remap[used] = torch.arange(used.numel(), device=lab.device)
    return remap[lab], cent[used]


def aligned_pieces(
    Zx: torch.Tensor,
    a: torch.Tensor,
    Zy: torch.Tensor,
    b: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    *,
    n_iter: int = 8,
) -> tuple[Blocks, Blocks]:
    """OT-aware aligned partition: block ``k`` of X faces block ``k`` of Y, equal masses.

    One level: k-means on the union of X and Y into ``k = ceil(max(n, m) / batch_size)``
    shared cells (each side keeps the cells it occupies); exact OT
    between the cluster measures (centroids, cluster masses; cost ``||c_i - c'_j||^2``) gives
    a sparse coarse plan ``Gamma``; each X-cluster is split by destination (an exact LP of
    its points to the destination centroids with capacities ``Gamma_ij``), each Y-cluster by
    origin, so piece ``(i, j)`` of X and of Y both have mass ``Gamma_ij``. Pieces with more
    than ``batch_size`` points on a side are split again recursively.
    """
    n, m = Zx.shape[0], Zy.shape[0]
    dev = a.device
    out_x: list[tuple[torch.Tensor, torch.Tensor]] = []
    out_y: list[tuple[torch.Tensor, torch.Tensor]] = []
    # zero-weight points carry no mass and join no block (label 0 for the lower bound)
    px0 = (a > 0).nonzero().flatten()
    py0 = (b > 0).nonzero().flatten()
    stack = [(px0, a[px0].clone(), py0, b[py0].clone(), 0)]
    while stack:
        ix, wx, iy, wy, depth = stack.pop()
        if (ix.numel() <= batch_size and iy.numel() <= batch_size) or depth > 6:
            out_x.append((ix, wx))
            out_y.append((iy, wy))
            continue
        k = max(2, math.ceil(max(ix.numel(), iy.numel()) / batch_size))
        # shared centroids: k-means on the union, so that X and Y are cut by the same cells
        # (identical clouds get identical pieces, hence exact block solves of cost 0)
        lxy, cxy = kmeans(torch.cat([Zx[ix], Zy[iy]]), torch.cat([wx, wy]), k, gen, n_iter)
        lx, cx = _restrict(lxy[: ix.numel()], cxy)
        ly, cy = _restrict(lxy[ix.numel() :], cxy)
        mx = torch.zeros(cx.shape[0], dtype=torch.float64, device=dev).index_add_(0, lx, wx)
        my = torch.zeros(cy.shape[0], dtype=torch.float64, device=dev).index_add_(0, ly, wy)
        Cc = ((cx[:, None, :] - cy[None, :, :]) ** 2).sum(-1)
        tot = wx.sum()
        G = torch.from_numpy(emd(mx / mx.sum(), my / my.sum(), Cc).plan).to(dev) * tot
        # entries at round-off level (relative 1e-12 of the smaller cluster) are dropped;
        # the pieces' masses are renormalised per cluster below, so each side of a pair
        # agrees with the other to ~1e-12 relative (well below the bounds' 1e-9 slack)
        G[G < 1e-12 * torch.minimum(mx[:, None], my[None, :])] = 0.0
        pieces: dict[tuple[int, int], list] = {}
        for i in range(cx.shape[0]):
            js = (G[i] > 0).nonzero().flatten()
            sel = (lx == i).nonzero().flatten()
            cap = G[i, js]
            cap = cap * (mx[i] / cap.sum())
            M = _split_by_destination(Zx[ix[sel]], wx[sel], cy[js], cap)
            for r, j in enumerate(js.tolist()):
                keep = M[:, r] > 0
                pieces.setdefault((i, j), [None, None])[0] = (ix[sel[keep]], M[keep, r])
        for j in range(cy.shape[0]):
            is_ = (G[:, j] > 0).nonzero().flatten()
            sel = (ly == j).nonzero().flatten()
            cap = G[is_, j]
            cap = cap * (my[j] / cap.sum())
            M = _split_by_destination(Zy[iy[sel]], wy[sel], cx[is_], cap)
            for r, i in enumerate(is_.tolist()):
                keep = M[:, r] > 0
                pieces[(i, j)][1] = (iy[sel[keep]], M[keep, r])
        if any(
            px is None or py is None or px[0].numel() == 0 or py[0].numel() == 0
            for px, py in pieces.values()
        ):
            # a split that would leave a side empty (e.g. 2 points against 700 with
            # batch_size=1: a capacity at round-off level) keeps this pair as one block
            out_x.append((ix, wx))
            out_y.append((iy, wy))
            continue
        for px, py in pieces.values():
            # both sides of a piece carry the same mass up to round-off: rescale Y's exactly
            stack.append((px[0], px[1], py[0], py[1], depth + 1))
    idx_x = [p[0] for p in out_x]
    w_x = [p[1] for p in out_x]
    idx_y = [p[0] for p in out_y]
    w_y = [p[1] for p in out_y]
    return (
        Blocks(idx_x, w_x, _labels_from(idx_x, w_x, n, dev)),
        Blocks(idx_y, w_y, _labels_from(idx_y, w_y, m, dev)),
    )


def make_blocks(
    Zx: torch.Tensor,
    a: torch.Tensor,
    Zy: torch.Tensor,
    b: torch.Tensor,
    partition: str,
    batch_size: int,
    gen: torch.Generator,
) -> tuple[Blocks, Blocks]:
    """The blocks of both sides for the mini-batch bounds: ``"aligned"``
    (:func:`aligned_pieces`) or ``"random"`` (:func:`random_blocks` on each side)."""
    if partition == "aligned":
        return aligned_pieces(Zx, a, Zy, b, batch_size, gen)
    return random_blocks(Zx.shape[0], batch_size, a, gen), random_blocks(
        Zy.shape[0], batch_size, b, gen
    )
