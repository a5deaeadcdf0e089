"""Per-dataset statistics (:class:`DatasetStats`): validated features, label codes, class
means/covariances/roots and the within-dataset label table, computed once per dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import config
from ..core.arrays import as_labels, as_points, device_of
from ..core.gaussian import covariance, gaussian_w2_sq_table_err, ordered_mean, sort_rows, sqrtm_psd
from ..core.gaussian_cert import class_radius
from ..core.partition import kmeans
from ..errors import InputError
from .labels import LabelTable, exact_table

STATS_INNER = ("exact", "gaussian", "both")


# --------------------------------------------------------------------------------------
# per-dataset statistics
# --------------------------------------------------------------------------------------
def encode_label(v: Any) -> list[Any]:
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
        return ["tuple", [encode_label(x) for x in v]]
    raise InputError(
        f"label {v!r} of type {type(v).__name__} cannot be stored in the cache",
        field="labels",
        fix="use int, float, bool, str or tuple labels",
    )


def decode_label(t: list[Any]) -> Any:
    kind, v = t
    if kind == "none":
        return None
    if kind == "tuple":
        return tuple(decode_label(x) for x in v)
    return {"bool": bool, "int": int, "float": float, "str": str}[kind](v)


def content_hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:32]


def tensor_bytes(t: torch.Tensor) -> bytes:
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
        self_gaussian_err: its rigorous entry-wise error bound (see :meth:`gaussian_margins`).
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
    self_gaussian_err: torch.Tensor | None = None
    _cert: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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

    def gaussian_margins(self) -> tuple[torch.Tensor, tuple[str, ...]]:
        """``(radii [K], sorted_hashes)`` for the rigorous Gaussian label-cost margins
        (computed once, kept): ``radii[k] >= W(N(mu_k, S_k), N(mu~_k, R~_k R~_k^T))`` between
        the Gaussian of class ``k``'s exact mean and covariance and the stored statistics
        (:func:`otaudit.core.gaussian_cert.class_radius`), and a content hash of each class's
        sorted points (equal hashes: identical point sets, label cost exactly 0)."""
        if "radii" not in self._cert:
            if self.covs is None or self.cov_sqrts is None:
                raise ValueError("gaussian_margins needs class covariances")
            rid = float(self.params.get("ridge", config.GAUSSIAN_COV_RIDGE))
            pts = [self.class_points(k).to(torch.float64) for k in range(self.n_classes)]
            radii = [
                class_radius(p, self.means[k], self.covs[k], self.cov_sqrts[k], rid)
                for k, p in enumerate(pts)
            ]
            self._cert["radii"] = torch.tensor(radii, dtype=torch.float64, device=self.means.device)
            if "sorted_hashes" not in self._cert:  # dataset_stats hands them over when it can
                self._cert["sorted_hashes"] = tuple(
                    content_hash(tensor_bytes(sort_rows(p))) for p in pts
                )
        return self._cert["radii"], self._cert["sorted_hashes"]

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
            "classes": [encode_label(c) for c in self.classes],
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
            out["self_exact_err"] = self.self_exact.error.cpu().numpy()
        if self.self_gaussian is not None and self.self_gaussian_err is not None:
            out["self_gaussian"] = self.self_gaussian.cpu().numpy()
            out["self_gaussian_err"] = self.self_gaussian_err.cpu().numpy()
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
        # tables written before their margins existed (issue 13) are dropped, not trusted:
        # they are recomputed where needed
        if "self_exact_value" in d and "self_exact_err" in d:
            self_exact = LabelTable(
                t("self_exact_value"),
                t("self_exact_lower"),
                t("self_exact_upper"),
                meta["self_exact_method"],
                int(meta["self_exact_n_solves"]),
                bool(meta["self_exact_converged"]),
                t("self_exact_err"),
            )
        has_sg = "self_gaussian" in d and "self_gaussian_err" in d
        return cls(
            name=meta["name"],
            fingerprint=meta["fingerprint"],
            features=t("features"),
            codes=t("codes"),
            classes=tuple(decode_label(c) for c in meta["classes"]),
            counts=np.array(d["counts"], dtype=np.int64),
            labeled=bool(meta["labeled"]),
            class_hashes=tuple(meta["class_hashes"]),
            means=t("means"),
            covs=t("covs") if "covs" in d else None,
            cov_sqrts=t("cov_sqrts") if "cov_sqrts" in d else None,
            self_exact=self_exact,
            self_gaussian=t("self_gaussian") if has_sg else None,
            self_gaussian_err=t("self_gaussian_err") if has_sg else None,
            params=dict(meta["params"]),
        )


def _kmeans_labels(X: torch.Tensor, k: int, dataset: str) -> np.ndarray:
    """Deterministic pseudo-labels: :func:`otaudit.core.partition.kmeans` (k-means++ seeds
    from a generator seeded ``config.SEED``, ``config.OTDD_KMEANS_ITER`` Lloyd iterations,
    uniform weights); an empty cluster is an InputError."""
    if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= X.shape[0]):
        raise InputError(
            f"pseudo_labels={k!r} must be an int between 1 and n={X.shape[0]}",
            dataset=dataset,
            field="pseudo_labels",
            fix="pass a smaller k",
        )
    n = X.shape[0]
    w = torch.full((n,), 1.0 / n, dtype=torch.float64, device=X.device)
    gen = torch.Generator().manual_seed(config.SEED)
    lab, cent = kmeans(X, w, k, gen, n_iter=config.OTDD_KMEANS_ITER, init="++")
    if cent.shape[0] < k:
        raise InputError(
            f"k-means with k={k} left a cluster empty",
            dataset=dataset,
            field="pseudo_labels",
            fix="pass a smaller pseudo_labels",
        )
    return lab.cpu().numpy().astype(np.int64)


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
    class_hashes = tuple(content_hash(tensor_bytes(p)) for p in pts)
    fingerprint = content_hash(
        np.array([n, d], dtype=np.int64).tobytes(),
        tensor_bytes(Xt),
        codes_np.tobytes(),
        json.dumps([encode_label(c) for c in classes]).encode(),
    )
    spts = [sort_rows(p.to(torch.float64)) for p in pts]  # sorted once per class
    sorted_hashes: tuple[str, ...] | None = None  # for the Gaussian margins only
    means = torch.stack([ordered_mean(p, presorted=True) for p in spts])  # order-free (#13)
    covs = roots = self_g = self_ge = None
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
        covs = torch.stack([covariance(p, rid, presorted=True)[1] for p in spts])
        sorted_hashes = tuple(content_hash(tensor_bytes(p)) for p in spts)
        roots = sqrtm_psd(covs)
        if ridge is not None:
            params["ridge"] = rid
        if self_tables:
            probe = DatasetStats(
                ds, "", Xt, codes, tuple(classes), counts, labeled, class_hashes, means,
                covs, roots, params=params, _class_points=pts,
                _cert={"sorted_hashes": sorted_hashes},
            )  # fmt: skip
            self_g, self_ge = gaussian_table(probe, probe)
            # exact symmetry within one dataset; the margin covers the averaging
            g0, e0 = self_g, self_ge
            self_g = 0.5 * (g0 + g0.T)
            self_ge = torch.maximum(e0 + (g0 - self_g).abs(), e0.T + (g0.T - self_g).abs())
            self_ge = self_ge * (1.0 + 4 * 2.0**-53)
            self_g.fill_diagonal_(0.0)
            self_ge.fill_diagonal_(0.0)  # a class against itself: 0 exactly
    if labeled and self_tables and inner in ("exact", "both"):
        self_e = exact_table(
            pts,
            class_hashes,
            pts,
            class_hashes,
            symmetric=True,
            device=Xt.device,
            inner_options={},
            dataset=ds,
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
        self_gaussian_err=self_ge,
        params=params,
        _class_points=pts,
        _cert={} if sorted_hashes is None else {"sorted_hashes": sorted_hashes},
    )


def gaussian_table(sa: DatasetStats, sb: DatasetStats) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian label table ``[Ka, Kb]`` between two datasets' classes and its rigorous
    entry-wise error bound ``err >= |table - T_true|`` (``T_true``: ``W_2^2`` between the
    Gaussians of the classes' exact means and covariances;
    :mod:`otaudit.core.gaussian_cert`). Classes with identical sorted point sets have
    ``T_true = 0``: their ``err`` is the table entry itself (0 when, as usual, the stored
    statistics agree bitwise)."""
    ra, ha = sa.gaussian_margins()
    rb, hb = sb.gaussian_margins()
    g, e = gaussian_w2_sq_table_err(
        sa.means, sa.covs, sa.cov_sqrts, sb.means, sb.covs, sb.cov_sqrts,
        radii_a=ra, radii_b=rb,
    )  # fmt: skip
    assert e is not None
    cols: dict[str, list[int]] = {}
    for j, h in enumerate(hb):
        cols.setdefault(h, []).append(j)
    for i, h in enumerate(ha):
        for j in cols.get(h, ()):
            e[i, j] = g[i, j]
    return g, e


# --------------------------------------------------------------------------------------
# mergeable partial statistics (shard-parallel preparation, issue 14)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassMoments:
    """Partial first/second moments of ONE class over some rows, mergeable exactly.

    ``count`` rows, their float64 ``mean`` ``[d]`` and co-moment matrix
    ``comoment = sum_i (x_i - mean)(x_i - mean)^T`` ``[d, d]``; ``sum = count * mean`` and
    the unbiased covariance is ``comoment / (count - 1)``. Two parts merge by Chan, Golub
    & LeVeque's pairwise update (1979)::

        n = n_a + n_b,  delta = mean_b - mean_a,
        mean = mean_a + delta * n_b / n,
        M = M_a + M_b + delta delta^T * n_a n_b / n

    which is exact in real arithmetic and backward stable in float64 (no cancellation of
    large raw sums), so merged statistics agree with a whole-dataset two-pass computation
    to ~(log2(shards) + d) u relative (well under 1e-12 for d <= a few thousand).
    """

    count: int
    mean: np.ndarray
    comoment: np.ndarray

    @property
    def sum(self) -> np.ndarray:
        return self.mean * self.count

    def covariance(self) -> np.ndarray:
        """Unbiased covariance ``comoment / (count - 1)`` (needs ``count >= 2``)."""
        return self.comoment / (self.count - 1)

    @classmethod
    def of(cls, X: np.ndarray) -> ClassMoments:
        """Two-pass moments of the rows of ``X`` ``[n, d]`` (computed in float64)."""
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        Z = X - mean
        return cls(int(X.shape[0]), mean, Z.T @ Z)

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Chan et al.'s pairwise update: ``self`` then ``other`` (order fixed by caller)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        M = self.comoment + other.comoment + np.outer(delta, delta) * (self.count * other.count / n)
        return ClassMoments(n, mean, M)


def label_key(v: Any) -> str:
    """A stable, picklable key for one label value (its :func:`encode_label` JSON)."""
    return json.dumps(encode_label(v.item() if isinstance(v, np.generic) else v))


def shard_moments(X: Any, y: Any) -> dict[str, ClassMoments]:
    """Per-class :class:`ClassMoments` of one shard: label key -> moments (one key,
    ``label_key(None)``, for an unlabeled shard). ``X`` ``[rows, d]``, ``y`` ``[rows]`` or None."""
    X = np.asarray(X, dtype=np.float64)
    if y is None:
        return {label_key(None): ClassMoments.of(X)}
    y = np.asarray(y)
    out: dict[str, ClassMoments] = {}
    for key, idx in _label_groups(y).items():
        out[key] = ClassMoments.of(X[idx])
    return out


def _label_groups(y: np.ndarray) -> dict[str, np.ndarray]:
    """label key -> the ascending row indices holding it. Numeric, bool and string arrays
    are grouped by value with ``np.unique`` (floats by their bit pattern, so ``-0.0`` and
    ``0.0`` stay apart as their keys do) and keyed once per distinct value; object arrays
    (mixed types, tuples) row by row. Distinct values with one key are merged."""
    groups: dict[str, np.ndarray] = {}
    if y.dtype.kind in "biufUS" and y.ndim == 1:
        by = (
            y.view(np.int64 if y.dtype.itemsize == 8 else np.int32)
            if y.dtype.kind == "f" and y.dtype.itemsize in (4, 8)
            else y
        )
        uniq, first, inv = np.unique(by, return_index=True, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.cumsum(np.bincount(inv, minlength=len(uniq)))[:-1]
        for u, idx in zip(first, np.split(order, bounds), strict=True):
            key = label_key(y[u])
            groups[key] = np.sort(np.concatenate([groups[key], idx])) if key in groups else idx
        return groups
    lists: dict[str, list[int]] = {}
    for i, v in enumerate(y.tolist()):
        lists.setdefault(label_key(v), []).append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in lists.items()}


def merge_moments(parts: list[dict[str, ClassMoments]]) -> dict[str, ClassMoments]:
    """Merge per-shard moments in the given (shard index) order: deterministic, since each
    class's parts are folded left to right whatever order the shards finished in."""
    out: dict[str, ClassMoments] = {}
    for part in parts:
        for key in sorted(part):
            out[key] = out[key].merge(part[key]) if key in out else part[key]
    return out


def moments_arrays(moments: dict[str, ClassMoments], classes: tuple[Any, ...]) -> dict:
    """The merged moments as arrays in ``classes`` order (the stats cache entry's
    ``moment_counts [K]``, ``moment_means [K, d]``, ``moment_comoments [K, d, d]``)."""
    ms = [moments[label_key(c)] for c in classes]
    return {
        "moment_counts": np.asarray([m.count for m in ms], dtype=np.int64),
        "moment_means": np.stack([m.mean for m in ms]),
        "moment_comoments": np.stack([m.comoment for m in ms]),
    }
