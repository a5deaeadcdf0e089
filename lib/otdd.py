"""Optimal Transport Dataset Distance (OTDD).

Alvarez-Melis & Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.
A dataset ``D = {(x_i, y_i)}`` (uniform weights) is a distribution over labelled points; the
ground cost between two labelled points is

.. math::

    c((x, y), (x', y')) = \\lambda_x \\|x - x'\\|^2 + \\lambda_y W_2^2(\\alpha_y, \\alpha_{y'})

where ``alpha_y`` is the empirical distribution of the features with label ``y``, and

.. math::

    \\mathrm{OTDD}^2(D_1, D_2) = \\min_{\\pi \\in U(a, b)} \\langle \\pi, c \\rangle .

The label-to-label term ``W_2^2(alpha_y, alpha_y')`` ("label table") is computed either
``inner="exact"`` (exact OT between the two class point clouds, squared-Euclidean cost; beyond
``config.OTDD_INNER_EXACT_MAX`` points per side certified bounds from :func:`solve_ot`) or
``inner="gaussian"`` (``||mu - mu'||^2 + Bures^2(S, S')`` with unbiased class covariances,
see :mod:`otaudit.gaussian`).

Per-dataset work (validation, class statistics, covariance roots, the within-dataset label
table) lives in :class:`DatasetStats`, computed once per dataset by :func:`dataset_stats`;
per-pair work (the cross label table and the outer OT problem) in :func:`otdd_from_stats`.
:func:`otdd_matrix` computes a registry's matrix from N dataset passes plus N(N-1)/2 pairs.

Certification: OT is monotone in the ground cost, so when the label table is only bounded
(``lower <= W <= upper`` entry-wise), solving the outer problem with the lower table and
taking its certified lower bound gives a certified lower bound on OTDD², and likewise for the
upper table.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import config
from ._arrays import as_labels, as_points, check_pair, device_of
from .bounds import solve_ot
from .cost import SqEuclidean, sq_euclidean
from .errors import InputError
from .exact import emd
from .gaussian import covariance, gaussian_w2_sq_table, sqrtm_psd
from .result import OTResult

__all__ = [
    "DatasetStats",
    "LabelTable",
    "OTDDCost",
    "OTDDMatrix",
    "dataset_stats",
    "label_costs",
    "otdd",
    "otdd_from_stats",
    "otdd_matrix",
]

INNER_METHODS = ("exact", "gaussian")
STATS_INNER = ("exact", "gaussian", "both")
SOLVERS = ("auto", "exact", "sinkhorn", "minibatch")


# --------------------------------------------------------------------------------------
# label tables
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelTable:
    """Label-to-label costs ``W_2^2(alpha_i, alpha_j)`` between the classes of two datasets.

    ``value``, ``lower``, ``upper``: ``[Ka, Kb]`` float64 tensors with
    ``lower <= W_2^2 <= upper`` certified entry-wise (all three equal for exact solves and for
    the Gaussian closed form). ``n_solves`` counts inner OT solves (0 for Gaussian).
    """

    value: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    method: str
    n_solves: int = 0
    converged: bool = True

    @property
    def exact(self) -> bool:
        """True when every entry is known exactly (``lower == upper``)."""
        return bool(torch.equal(self.lower, self.upper))

    def transpose(self) -> LabelTable:
        return LabelTable(
            self.value.T.contiguous(),
            self.lower.T.contiguous(),
            self.upper.T.contiguous(),
            self.method,
            self.n_solves,
            self.converged,
        )


def _exact_table(
    pts_a: list[torch.Tensor],
    hashes_a: Sequence[str],
    pts_b: list[torch.Tensor],
    hashes_b: Sequence[str],
    *,
    symmetric: bool,
    device: torch.device,
    inner_options: dict[str, Any],
    class_cache: dict[tuple[str, str, str], tuple[float, float, float]] | None = None,
) -> LabelTable:
    """Exact (or, for big classes, certified-bounded) ``W_2^2`` between class point clouds.

    ``symmetric=True`` (the same dataset on both sides): only ``i < j`` is solved and mirrored.
    Identical class clouds (equal content hashes) give exactly 0 without a solve.
    ``class_cache`` (shared across the pairs of a registry): ``(value, lower, upper)`` per
    unordered pair of class content hashes, so a class pair that appears in several dataset
    pairs (e.g. unchanged classes across dataset versions) is solved once. Each class pair is
    solved in a canonical orientation (by hash), so the cached value does not depend on
    which dataset pair asked first.
    """
    Ka, Kb = len(pts_a), len(pts_b)
    val = torch.zeros((Ka, Kb), dtype=torch.float64)
    lo = torch.zeros((Ka, Kb), dtype=torch.float64)
    up = torch.zeros((Ka, Kb), dtype=torch.float64)
    n_solves = 0
    converged = True
    max_exact = int(inner_options.get("max_exact", config.OTDD_INNER_EXACT_MAX))
    large_solver = str(inner_options.get("solver", config.OTDD_INNER_LARGE_SOLVER))
    large_opts = dict(inner_options.get("options", {}))
    opt_key = json.dumps(inner_options, sort_keys=True, default=str)
    for i in range(Ka):
        for j in range(i + 1 if symmetric else 0, Kb):
            if hashes_a[i] == hashes_b[j]:
                continue  # identical clouds: W(alpha, alpha) = 0 exactly
            A, B = pts_a[i], pts_b[j]
            if hashes_b[j] < hashes_a[i]:
                A, B = B, A
            key = (min(hashes_a[i], hashes_b[j]), max(hashes_a[i], hashes_b[j]), opt_key)
            if class_cache is not None and key in class_cache:
                v, l_, u = class_cache[key]
                val[i, j], lo[i, j], up[i, j] = v, l_, u
                if symmetric:
                    val[j, i], lo[j, i], up[j, i] = v, l_, u
                continue
            if max(A.shape[0], B.shape[0]) <= max_exact:
                c = emd(
                    torch.full((A.shape[0],), 1.0 / A.shape[0], dtype=torch.float64),
                    torch.full((B.shape[0],), 1.0 / B.shape[0], dtype=torch.float64),
                    sq_euclidean(A, B),
                ).cost
                v = l_ = u = c
            else:
                r = solve_ot(SqEuclidean(A, B), solver=large_solver, **large_opts)
                v, l_, u = r.value, max(r.lower, 0.0), r.upper
                converged = converged and r.converged
            n_solves += 1
            if class_cache is not None:
                class_cache[key] = (v, l_, u)
            val[i, j], lo[i, j], up[i, j] = v, l_, u
            if symmetric:
                val[j, i], lo[j, i], up[j, i] = v, l_, u
    method = f"exact-lp(<= {max_exact} pts/class) else {large_solver}"
    return LabelTable(val.to(device), lo.to(device), up.to(device), method, n_solves, converged)


# --------------------------------------------------------------------------------------
# per-dataset statistics
# --------------------------------------------------------------------------------------
def _encode_label(v: Any) -> list[Any]:
    if v is None:
        return ["none", None]
    if isinstance(v, (bool, np.bool_)):
        return ["bool", bool(v)]
    if isinstance(v, (int, np.integer)):
        return ["int", int(v)]
    if isinstance(v, (float, np.floating)):
        return ["float", float(v)]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, tuple):
        return ["tuple", [_encode_label(x) for x in v]]
    raise InputError(
        f"label {v!r} of type {type(v).__name__} cannot be stored in the cache",
        field="labels",
        fix="use int, float, bool, str or tuple labels",
    )


def _decode_label(t: list[Any]) -> Any:
    kind, v = t
    if kind == "none":
        return None
    if kind == "tuple":
        return tuple(_decode_label(x) for x in v)
    return {"bool": bool, "int": int, "float": float, "str": str}[kind](v)


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:32]


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().numpy().tobytes()


@dataclass(frozen=True, eq=False)
class DatasetStats:
    """Statistics of ONE dataset, computed once and reused for every pair it appears in.

    Attributes:
        name: dataset name (used in messages and matrices; not part of the fingerprint).
        fingerprint: content hash of (features, labels); equal fingerprints = same dataset.
        features: ``[n, d]`` float64 tensor (on the input's device).
        codes: ``[n]`` int64 tensor, ``codes[i]`` indexes ``classes``.
        classes: the original labels (sorted when comparable), ``K`` of them.
        counts: ``[K]`` int64 class sizes.
        labeled: False for an unlabeled dataset (then ``K = 1``, ``classes = (None,)``).
        class_hashes: content hash of each class's point cloud (identical clouds -> W = 0).
        means: ``[K, d]`` class means.
        covs: ``[K, d, d]`` unbiased class covariances ``1/(n_y - 1)`` (None unless the
            Gaussian inner cost was requested).
        cov_sqrts: ``[K, d, d]`` their symmetric PSD square roots (None likewise).
        self_exact: within-dataset label table for ``inner="exact"`` (None if not computed).
        self_gaussian: ``[K, K]`` within-dataset Gaussian label table (None if not computed).
        params: how the statistics were made (e.g. pseudo-labels).
    """

    name: str
    fingerprint: str
    features: torch.Tensor
    codes: torch.Tensor
    classes: tuple[Any, ...]
    counts: np.ndarray
    labeled: bool
    class_hashes: tuple[str, ...]
    means: torch.Tensor
    covs: torch.Tensor | None = None
    cov_sqrts: torch.Tensor | None = None
    self_exact: LabelTable | None = None
    self_gaussian: torch.Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)
    _class_points: list[torch.Tensor] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._class_points:
            pts = [self.features[self.codes == k] for k in range(len(self.classes))]
            object.__setattr__(self, "_class_points", pts)

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def d(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.features.device

    def class_points(self, k: int) -> torch.Tensor:
        """``[n_k, d]`` points of class ``k`` (an index into ``classes``)."""
        return self._class_points[k]

    def has_inner(self, inner: str) -> bool:
        """Whether these statistics support ``inner`` (Gaussian needs covariances)."""
        return inner == "exact" or not self.labeled or self.covs is not None

    # -- serialisation for the pipeline cache -------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (``np.savez``-able); inverse: :meth:`from_arrays`."""
        meta = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "labeled": self.labeled,
            "classes": [_encode_label(c) for c in self.classes],
            "class_hashes": list(self.class_hashes),
            "params": self.params,
            "self_exact_method": None if self.self_exact is None else self.self_exact.method,
            "self_exact_n_solves": 0 if self.self_exact is None else self.self_exact.n_solves,
            "self_exact_converged": True if self.self_exact is None else self.self_exact.converged,
            "version": 1,
        }
        out: dict[str, np.ndarray] = {
            "meta_json": np.array(json.dumps(meta)),
            "features": self.features.detach().cpu().numpy(),
            "codes": self.codes.detach().cpu().numpy(),
            "counts": np.asarray(self.counts, dtype=np.int64),
            "means": self.means.detach().cpu().numpy(),
        }
        if self.covs is not None and self.cov_sqrts is not None:
            out["covs"] = self.covs.detach().cpu().numpy()
            out["cov_sqrts"] = self.cov_sqrts.detach().cpu().numpy()
        if self.self_exact is not None:
            out["self_exact_value"] = self.self_exact.value.cpu().numpy()
            out["self_exact_lower"] = self.self_exact.lower.cpu().numpy()
            out["self_exact_upper"] = self.self_exact.upper.cpu().numpy()
        if self.self_gaussian is not None:
            out["self_gaussian"] = self.self_gaussian.cpu().numpy()
        return out

    @classmethod
    def from_arrays(
        cls, d: dict[str, np.ndarray], *, device: torch.device | str | None = None
    ) -> DatasetStats:
        """Rebuild from :meth:`to_arrays` output (e.g. an ``np.load`` of an ``.npz``)."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        meta = json.loads(str(np.asarray(d["meta_json"])[()]))

        def t(key: str) -> torch.Tensor:
            return torch.from_numpy(np.array(d[key])).to(dev)

        self_exact = None
        if "self_exact_value" in d:
            self_exact = LabelTable(
                t("self_exact_value"),
                t("self_exact_lower"),
                t("self_exact_upper"),
                meta["self_exact_method"],
                int(meta["self_exact_n_solves"]),
                bool(meta["self_exact_converged"]),
            )
        return cls(
            name=meta["name"],
            fingerprint=meta["fingerprint"],
            features=t("features"),
            codes=t("codes"),
            classes=tuple(_decode_label(c) for c in meta["classes"]),
            counts=np.array(d["counts"], dtype=np.int64),
            labeled=bool(meta["labeled"]),
            class_hashes=tuple(meta["class_hashes"]),
            means=t("means"),
            covs=t("covs") if "covs" in d else None,
            cov_sqrts=t("cov_sqrts") if "cov_sqrts" in d else None,
            self_exact=self_exact,
            self_gaussian=t("self_gaussian") if "self_gaussian" in d else None,
            params=dict(meta["params"]),
        )


def _kmeans_labels(X: torch.Tensor, k: int, dataset: str) -> np.ndarray:
    """Deterministic k-means (scipy, k-means++ init, seed ``config.SEED``) pseudo-labels."""
    from scipy.cluster.vq import ClusterError, kmeans2

    if not (isinstance(k, int) and 1 <= k <= X.shape[0]):
        raise InputError(
            f"pseudo_labels={k!r} must be an int between 1 and n={X.shape[0]}",
            dataset=dataset,
            field="pseudo_labels",
            fix="pass a smaller k",
        )
    try:
        _, lab = kmeans2(
            X.cpu().numpy(),
            k,
            minit="++",
            seed=config.SEED,
            missing="raise",
            iter=config.OTDD_KMEANS_ITER,
        )
    except ClusterError:
        raise InputError(
            f"k-means with k={k} left a cluster empty",
            dataset=dataset,
            field="pseudo_labels",
            fix="pass a smaller pseudo_labels",
        ) from None
    return lab.astype(np.int64)


def dataset_stats(
    X: Any,
    y: Any,
    *,
    name: str | None = None,
    inner: str = config.OTDD_INNER,
    self_tables: bool = True,
    pseudo_labels: int | None = None,
    ridge: float | None = None,
) -> DatasetStats:
    """Validate one dataset and compute its per-dataset statistics (once per audit).

    Args:
        X: ``[n, d]`` features (numpy or torch, CPU/CUDA, float32/64).
        y: ``[n]`` labels of any hashable type, or None (unlabeled).
        name: dataset name for messages and matrices (default ``"dataset"``).
        inner: which label costs to prepare: ``"exact"`` (default ``config.OTDD_INNER``),
            ``"gaussian"`` (class covariances and roots) or ``"both"``. Pass the audit's inner
            method: ``"gaussian"``/``"both"`` reject classes with a single point.
        self_tables: also compute the within-dataset label table(s) (``K(K-1)/2`` inner solves
            for ``"exact"``), used for identical-dataset pairs and reports.
        pseudo_labels: for ``y=None``: label by deterministic k-means with this many clusters.
        ridge: Gaussian covariance shrinkage (default ``config.GAUSSIAN_COV_RIDGE``).

    Raises:
        InputError: bad features/labels, or (Gaussian) a class with a single point, whose
            unbiased covariance is undefined.
    """
    ds = "dataset" if name is None else str(name)
    if inner not in STATS_INNER:
        raise InputError(
            f"unknown inner {inner!r}",
            dataset=ds,
            field="inner",
            fix="use 'exact', 'gaussian' or 'both'",
        )
    Xt = as_points(X, dataset=ds, device=device_of(X))
    n, d = Xt.shape
    params: dict[str, Any] = {}
    if y is None and pseudo_labels is not None:
        y = _kmeans_labels(Xt, pseudo_labels, ds)
        params["pseudo_labels"] = int(pseudo_labels)
    elif pseudo_labels is not None:
        raise InputError(
            "pseudo_labels is only for unlabeled data (y=None)",
            dataset=ds,
            field="pseudo_labels",
            fix="drop pseudo_labels or pass y=None",
        )
    labeled = y is not None
    if labeled:
        codes_np, classes = as_labels(y, n, dataset=ds)
    else:
        codes_np, classes = np.zeros(n, dtype=np.int64), [None]
    K = len(classes)
    codes = torch.from_numpy(codes_np).to(Xt.device)
    counts = np.bincount(codes_np, minlength=K).astype(np.int64)
    pts = [Xt[codes == k] for k in range(K)]
    class_hashes = tuple(_sha(_bytes(p)) for p in pts)
    fingerprint = _sha(
        np.array([n, d], dtype=np.int64).tobytes(),
        _bytes(Xt),
        codes_np.tobytes(),
        json.dumps([_encode_label(c) for c in classes]).encode(),
    )
    means = torch.stack([p.mean(0) for p in pts])
    covs = roots = self_g = None
    self_e = None
    if labeled and inner in ("gaussian", "both"):
        small = [classes[k] for k in range(K) if counts[k] < 2]
        if small:
            raise InputError(
                f"class {small[0]!r} has 1 point ({len(small)} such classes), so its unbiased "
                f"covariance 1/(n_y-1) is undefined for inner='gaussian'",
                dataset=ds,
                field="labels",
                fix="use inner='exact', or drop or merge classes with one point",
            )
        rid = config.GAUSSIAN_COV_RIDGE if ridge is None else float(ridge)
        covs = torch.stack([covariance(p, rid)[1] for p in pts])
        roots = sqrtm_psd(covs)
        if self_tables:
            self_g = gaussian_w2_sq_table(means, covs, roots, means, covs, roots)
            self_g = 0.5 * (self_g + self_g.T)  # exact symmetry within one dataset
            self_g.fill_diagonal_(0.0)
        if ridge is not None:
            params["ridge"] = rid
    if labeled and self_tables and inner in ("exact", "both"):
        self_e = _exact_table(
            pts, class_hashes, pts, class_hashes, symmetric=True, device=Xt.device, inner_options={}
        )
    return DatasetStats(
        name=ds,
        fingerprint=fingerprint,
        features=Xt,
        codes=codes,
        classes=tuple(classes),
        counts=counts,
        labeled=labeled,
        class_hashes=class_hashes,
        means=means,
        covs=covs,
        cov_sqrts=roots,
        self_exact=self_e,
        self_gaussian=self_g,
        params=params,
        _class_points=pts,
    )


def label_costs(
    sa: DatasetStats,
    sb: DatasetStats,
    *,
    inner: str = config.OTDD_INNER,
    inner_options: dict[str, Any] | None = None,
    class_cache: dict[tuple[str, str, str], tuple[float, float, float]] | None = None,
) -> LabelTable:
    """Cross label table ``W_2^2(alpha_i^a, alpha_j^b)``, ``[Ka, Kb]`` (per-pair work).

    ``inner_options`` (``inner="exact"``): ``max_exact`` (points per class for the exact LP,
    default ``config.OTDD_INNER_EXACT_MAX``), ``solver`` and ``options`` for bigger classes
    (passed to :func:`solve_ot`; certified bounds carried into the table).
    ``class_cache``: a dict shared across pairs (see :func:`otdd_matrix`) so that class pairs
    seen before are not solved again.
    """
    opts = dict(inner_options or {})
    if sa.fingerprint == sb.fingerprint:  # same dataset: reuse the per-dataset table
        if inner == "exact" and sa.self_exact is not None and not opts:
            return sa.self_exact
        if inner == "gaussian" and sa.self_gaussian is not None:
            g = sa.self_gaussian
            return LabelTable(g, g, g, "gaussian-bures")
    if inner == "gaussian":
        for s in (sa, sb):
            if s.covs is None or s.cov_sqrts is None:
                raise InputError(
                    "statistics have no class covariances",
                    dataset=s.name,
                    field="inner",
                    fix="compute them with dataset_stats(..., inner='gaussian' or 'both')",
                )
        g = gaussian_w2_sq_table(sa.means, sa.covs, sa.cov_sqrts, sb.means, sb.covs, sb.cov_sqrts)
        return LabelTable(g, g, g, "gaussian-bures")
    if inner == "exact":
        pa = [sa.class_points(k) for k in range(sa.n_classes)]
        pb = [sb.class_points(k) for k in range(sb.n_classes)]
        return _exact_table(
            pa,
            sa.class_hashes,
            pb,
            sb.class_hashes,
            symmetric=False,
            device=sa.device,
            inner_options=opts,
            class_cache=class_cache,
        )
    raise InputError(f"unknown inner {inner!r}", field="inner", fix="use 'exact' or 'gaussian'")


# --------------------------------------------------------------------------------------
# the outer problem
# --------------------------------------------------------------------------------------
class OTDDCost:
    """The OTDD ground cost as a :class:`otaudit.cost.GroundCost`.

    ``block(I, J) = lambda_x * ||Xa[I] - Xb[J]||^2 + lambda_y * table[ya[I]][:, yb[J]]``
    (float64, ``[|I|, |J|]``). ``features_x`` / ``features_y`` (coordinates for the
    mini-batch partitions only) are ``phi(x, y) = [sqrt(lambda_x) x, w sqrt(lambda_y) mu_y]``
    with ``w = label_weight`` (default ``config.OTDD_PARTITION_LABEL_WEIGHT``). With ``w = 1``,
    since ``W_2^2(alpha_y, alpha_y') >= ||mu_y - mu_y'||^2``, ``||phi - phi'||^2`` is a lower
    bound of the OTDD cost; ``w > 1`` makes blocks more class-homogeneous, which tightened the
    mini-batch bounds on digits pairs sharing a label set (see ``config``).
    """

    def __init__(
        self,
        stats_a: DatasetStats,
        stats_b: DatasetStats,
        label_table: torch.Tensor,
        lambda_x: float = 1.0,
        lambda_y: float = 1.0,
        label_weight: float | None = None,
    ):
        self.label_weight = (
            config.OTDD_PARTITION_LABEL_WEIGHT if label_weight is None else float(label_weight)
        )
        self.a = stats_a
        self.b = stats_b
        self.table = label_table.to(torch.float64).to(stats_a.device)
        self.lambda_x = float(lambda_x)
        self.lambda_y = float(lambda_y)
        self.n = stats_a.n
        self.m = stats_b.n
        self._fx: torch.Tensor | None = None
        self._fy: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.a.device

    def _embed(self, s: DatasetStats) -> torch.Tensor:
        parts = [math.sqrt(self.lambda_x) * s.features]
        if s.labeled and self.lambda_y > 0:
            parts.append(self.label_weight * math.sqrt(self.lambda_y) * s.means[s.codes])
        return torch.cat(parts, dim=1)

    @property
    def features_x(self) -> torch.Tensor:
        if self._fx is None:
            self._fx = self._embed(self.a)
        return self._fx

    @property
    def features_y(self) -> torch.Tensor:
        if self._fy is None:
            self._fy = self._embed(self.b)
        return self._fy

    def block(
        self, I: torch.Tensor | slice | None = None, J: torch.Tensor | slice | None = None
    ) -> torch.Tensor:
        Xi = self.a.features if I is None else self.a.features[I]
        Yj = self.b.features if J is None else self.b.features[J]
        ci = self.a.codes if I is None else self.a.codes[I]
        cj = self.b.codes if J is None else self.b.codes[J]
        C = sq_euclidean(Xi, Yj)
        if self.lambda_x != 1.0:
            C = self.lambda_x * C
        if self.lambda_y != 0.0:
            C = C + self.lambda_y * self.table[ci][:, cj]
        return C

    def transpose(self) -> OTDDCost:
        return OTDDCost(
            self.b, self.a, self.table.T, self.lambda_x, self.lambda_y, self.label_weight
        )


def _check_common(inner: str, solver: str, lambda_x: float, lambda_y: float) -> None:
    if inner not in INNER_METHODS:
        raise InputError(
            f"unknown inner {inner!r}", field="inner", fix="use inner='exact' or inner='gaussian'"
        )
    if solver not in SOLVERS:
        raise InputError(
            f"unknown solver {solver!r}", field="solver", fix=f"use one of {', '.join(SOLVERS)}"
        )
    for nm, v in (("lambda_x", lambda_x), ("lambda_y", lambda_y)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise InputError(
                f"{nm}={v!r} must be a finite number >= 0", field=nm, fix=f"pass e.g. {nm}=1.0"
            )


def _base_params(inner: str, solver: str, lambda_x: float, lambda_y: float) -> dict[str, Any]:
    return {
        "inner": inner,
        "solver": solver,
        "lambda_x": float(lambda_x),
        "lambda_y": float(lambda_y),
    }


def _mixed_labels_error(unlabeled: str) -> InputError:
    return InputError(
        "one dataset is labeled and the other is not",
        dataset=unlabeled,
        field="labels",
        fix="pass labels for both, y=None for both, "
        "or pseudo_labels=k to label the unlabeled one by k-means",
    )


def _identical_result(inner: str, params: dict[str, Any], seconds: float = 0.0) -> OTResult:
    """OTDD² of a dataset with itself: exactly 0 (identity coupling, ``c >= 0``), no solve."""
    return OTResult(
        value=0.0,
        lower=0.0,
        upper=0.0,
        certified=True,
        method=f"otdd[{inner}]:identical-datasets",
        n_solves=0,
        seconds=seconds,
        params=params,
        converged=True,
        extra={"inner_solves": 0, "outer_solves": 0},
    )


def otdd_from_stats(
    sa: DatasetStats,
    sb: DatasetStats,
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    inner_options: dict[str, Any] | None = None,
    class_cache: dict[tuple[str, str, str], tuple[float, float, float]] | None = None,
    **solver_options: Any,
) -> OTResult:
    """OTDD² between two datasets given their cached :class:`DatasetStats` (per-pair work).

    Computes the cross label table (``Ka x Kb`` inner costs) and solves the outer OT problem
    with :func:`otaudit.solve_ot` (``solver``, ``**solver_options`` passed through). Returns
    an :class:`OTResult` with ``value`` = OTDD², certified ``lower``/``upper``,
    ``distance`` = OTDD. The result is exactly symmetric in (sa, sb), and exactly 0 for
    identical datasets (same fingerprint: the identity coupling has cost 0 and ``c >= 0``).

    Unlabeled statistics (``labeled=False``, both sides): the label term is dropped, so the
    value is plain ``lambda_x * W_2^2``. One labeled and one unlabeled side is an error.
    """
    t0 = time.perf_counter()
    _check_common(inner, solver, lambda_x, lambda_y)
    if sa.d != sb.d:
        raise InputError(
            f"dimension mismatch: {sa.name!r} has d={sa.d}, {sb.name!r} has d={sb.d}",
            dataset=f"{sa.name} vs {sb.name}",
            field="features",
            fix="embed both datasets with the same embedder",
        )
    if sa.labeled != sb.labeled:
        raise _mixed_labels_error(sb.name if sa.labeled else sa.name)
    labeled = sa.labeled
    use_labels = labeled and lambda_y > 0
    if use_labels:
        for s in (sa, sb):
            if not s.has_inner(inner):
                raise InputError(
                    "statistics have no class covariances",
                    dataset=s.name,
                    field="inner",
                    fix="compute them with dataset_stats(..., inner='gaussian' or 'both')",
                )
    params: dict[str, Any] = {
        **_base_params(inner, solver, lambda_x, lambda_y),
        "labels": "labeled" if labeled else "unlabeled",
        "n_a": sa.n,
        "n_b": sb.n,
        "classes_a": sa.n_classes if labeled else 0,
        "classes_b": sb.n_classes if labeled else 0,
        "dataset_a": sa.name,
        "dataset_b": sb.name,
    }
    for key, s in (("pseudo_labels_a", sa), ("pseudo_labels_b", sb)):
        if "pseudo_labels" in s.params:
            params[key] = s.params["pseudo_labels"]
    if solver_options:
        params["solver_options"] = {
            k: v
            for k, v in solver_options.items()
            if isinstance(v, (int, float, str, bool, type(None)))
        }
    if sa.fingerprint == sb.fingerprint:
        return _identical_result(inner, params, time.perf_counter() - t0)
    # canonical order -> bitwise-identical results for (a, b) and (b, a)
    if sb.fingerprint < sa.fingerprint:
        sa, sb = sb, sa
    if class_cache is None:  # still dedupe mirrored class pairs within this pair
        class_cache = {}
    if use_labels:
        table = label_costs(
            sa, sb, inner=inner, inner_options=inner_options, class_cache=class_cache
        )
    else:
        z = torch.zeros((sa.n_classes, sb.n_classes), dtype=torch.float64, device=sa.device)
        table = LabelTable(z, z, z, "none")
    ly = float(lambda_y) if use_labels else 0.0

    def outer(tab: torch.Tensor) -> OTResult:
        return solve_ot(OTDDCost(sa, sb, tab, lambda_x, ly), solver=solver, **solver_options)

    if table.exact:
        r = outer(table.value)
        value, lower, upper, outer_results = r.value, r.lower, r.upper, [r]
    else:  # monotonicity of OT in the ground cost carries the inner bounds through
        r_lo, r_hi = outer(table.lower), outer(table.upper)
        outer_results = [r_lo, r_hi]
        if torch.equal(table.value, table.upper):
            r_val = r_hi
        else:
            r_val = outer(table.value)
            outer_results.append(r_val)
        lower, upper = r_lo.lower, r_hi.upper
        value = min(max(r_val.value, lower), upper)
    lower = max(lower, 0.0)  # the OTDD cost is non-negative
    value = max(value, lower)
    outer_method = outer_results[0].method
    return OTResult(
        value=float(value),
        lower=float(lower),
        upper=float(upper),
        certified=all(r.certified for r in outer_results),
        method=f"otdd[{inner}:{table.method}] outer={outer_method}",
        n_solves=table.n_solves + sum(r.n_solves for r in outer_results),
        seconds=time.perf_counter() - t0,
        params=params,
        converged=table.converged and all(r.converged for r in outer_results),
        extra={
            "inner_solves": table.n_solves,
            "outer_solves": len(outer_results),
            "inner_exact": table.exact,
            "outer": [r.to_dict() for r in outer_results],
        },
    )


def otdd(
    X1: Any,
    y1: Any,
    X2: Any,
    y2: Any,
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    pseudo_labels: int | None = None,
    names: tuple[str, str] = ("D1", "D2"),
    inner_options: dict[str, Any] | None = None,
    **solver_options: Any,
) -> OTResult:
    """Optimal Transport Dataset Distance between ``(X1, y1)`` and ``(X2, y2)``.

    Args:
        X1, X2: ``[n, d]`` and ``[m, d]`` features (numpy or torch, CPU/CUDA, float32/64).
        y1, y2: ``[n]``, ``[m]`` labels of any hashable type (label sets may differ), or both
            None (unlabeled: plain ``lambda_x * W_2^2``; or ``pseudo_labels=k`` k-means labels).
        inner: label-to-label cost, ``"exact"`` (OT between class clouds) or ``"gaussian"``.
        solver: outer OT solver for :func:`otaudit.solve_ot` (``"auto"``: exact LP when
            ``n*m <= config.EXACT_MAX_ENTRIES``, else certified mini-batch bounds).
        lambda_x, lambda_y: weights of the feature and label terms.
        names: dataset names used in error messages and ``params``.
        inner_options: see :func:`label_costs`.
        **solver_options: passed to the outer solver (e.g. ``reg``, ``batch_size``).

    Returns:
        :class:`OTResult`: ``value`` = OTDD² (squared), ``lower``/``upper`` certified,
        ``distance`` = OTDD.
    """
    t0 = time.perf_counter()
    _check_common(inner, solver, lambda_x, lambda_y)
    if (y1 is None) != (y2 is None) and pseudo_labels is None:
        raise _mixed_labels_error(names[0] if y1 is None else names[1])
    stats = []
    for X, y, nm in ((X1, y1, names[0]), (X2, y2, names[1])):
        stats.append(
            dataset_stats(
                X,
                y,
                name=nm,
                inner=inner,
                self_tables=False,
                pseudo_labels=pseudo_labels if y is None else None,
            )
        )
    check_pair(stats[0].features, stats[1].features, names[0], names[1])
    r = otdd_from_stats(
        stats[0],
        stats[1],
        inner=inner,
        solver=solver,
        lambda_x=lambda_x,
        lambda_y=lambda_y,
        inner_options=inner_options,
        **solver_options,
    )
    return r.replace(seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# registry matrices
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OTDDMatrix:
    """An OTDD matrix over a registry of datasets.

    Attributes:
        names: the N dataset names (row/column order).
        fingerprints: their content fingerprints (used to reuse entries incrementally).
        values: ``[N, N]`` float64 OTDD² (symmetric, zero diagonal).
        lower, upper: ``[N, N]`` certified bounds on ``values``.
        results: ``results[i][j]`` the :class:`OTResult` of the pair (same object for
            ``[i][j]`` and ``[j][i]``; an exact zero result on the diagonal).
        params: inner, solver, lambdas and solver options shared by every entry.
        computed: the pairs ``(i, j)``, ``i < j``, computed in this call (others reused).
    """

    names: tuple[str, ...]
    fingerprints: tuple[str, ...]
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    results: tuple[tuple[OTResult, ...], ...]
    params: dict[str, Any]
    computed: tuple[tuple[int, int], ...] = ()

    @property
    def distances(self) -> np.ndarray:
        """``[N, N]`` OTDD = sqrt(OTDD²)."""
        return np.sqrt(np.maximum(self.values, 0.0))


def otdd_matrix(
    datasets: Sequence[tuple[str, Any, Any] | DatasetStats],
    *,
    inner: str = config.OTDD_INNER,
    solver: str = config.OTDD_SOLVER,
    lambda_x: float = config.LAMBDA_X,
    lambda_y: float = config.LAMBDA_Y,
    existing: OTDDMatrix | None = None,
    inner_options: dict[str, Any] | None = None,
    **solver_options: Any,
) -> OTDDMatrix:
    """The N x N OTDD² matrix of a registry: N dataset passes + N(N-1)/2 pairs.

    Args:
        datasets: ``(name, X, y)`` tuples and/or precomputed :class:`DatasetStats`.
        existing: a previous :class:`OTDDMatrix` with the same parameters: pairs whose two
            datasets have the same fingerprints there are reused, so adding one dataset
            computes only its new row.
        other arguments: as :func:`otdd`.
    """
    _check_common(inner, solver, lambda_x, lambda_y)
    stats: list[DatasetStats] = []
    for item in datasets:
        if isinstance(item, DatasetStats):
            stats.append(item)
        else:
            nm, X, y = item
            stats.append(dataset_stats(X, y, name=nm, inner=inner, self_tables=False))
    names = tuple(s.name for s in stats)
    if len(set(names)) != len(names):
        dup = next(nm for nm in names if names.count(nm) > 1)
        raise InputError(
            "dataset names must be unique",
            dataset=dup,
            field="name",
            fix="give every dataset its own name",
        )
    params: dict[str, Any] = {
        **_base_params(inner, solver, lambda_x, lambda_y),
        "solver_options": json.dumps(solver_options, sort_keys=True, default=str),
        "inner_options": json.dumps(inner_options or {}, sort_keys=True, default=str),
    }
    old: dict[tuple[str, str], OTResult] = {}
    if existing is not None:
        if existing.params != params:
            raise InputError(
                f"existing matrix was computed with {existing.params}, not {params}",
                field="existing",
                fix="recompute from scratch or pass the same parameters",
            )
        for i, fi in enumerate(existing.fingerprints):
            for j, fj in enumerate(existing.fingerprints):
                if i != j:
                    old[(fi, fj)] = existing.results[i][j]
    N = len(stats)
    # exact inner costs per pair of class clouds, shared by all pairs of this registry
    class_cache: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    res: list[list[OTResult | None]] = [[None] * N for _ in range(N)]
    computed = []
    for i in range(N):
        res[i][i] = _identical_result(
            inner, {"inner": inner, "dataset_a": names[i], "dataset_b": names[i]}
        )
        for j in range(i + 1, N):
            key = (stats[i].fingerprint, stats[j].fingerprint)
            r = old.get(key)
            if r is None:
                r = otdd_from_stats(
                    stats[i],
                    stats[j],
                    inner=inner,
                    solver=solver,
                    lambda_x=lambda_x,
                    lambda_y=lambda_y,
                    inner_options=inner_options,
                    class_cache=class_cache,
                    **solver_options,
                )
                computed.append((i, j))
            res[i][j] = res[j][i] = r
    vals = np.array([[r.value for r in row] for row in res], dtype=np.float64)
    lo = np.array([[r.lower for r in row] for row in res], dtype=np.float64)
    up = np.array([[r.upper for r in row] for row in res], dtype=np.float64)
    return OTDDMatrix(
        names=names,
        fingerprints=tuple(s.fingerprint for s in stats),
        values=vals,
        lower=lo,
        upper=up,
        results=tuple(tuple(row) for row in res),  # type: ignore[arg-type]
        params=params,
        computed=tuple(computed),
    )
