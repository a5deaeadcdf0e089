"""Point-cloud families with a closed-form W2^2, shared by ``bench_generalize.py`` and the tests.

Each family draws ``X`` (and weights ``a``), applies the gradient ``T = grad(phi)`` of a convex
``phi`` and shuffles the rows of ``Y = T(X)``. The graph of a gradient of a convex function is
cyclically monotone, so the identity matching ``x_i -> T(x_i)`` is an optimal plan for the
squared-Euclidean cost (Brenier; for discrete measures: Rockafellar's theorem), and
``W2^2 = sum_i a_i |x_i - T(x_i)|^2`` exactly. ``n != m`` is made by splitting target points
into copies that share their weight (the measure, hence W2^2, is unchanged).

``make(name, n, seed) -> Problem`` with ``X [n, d]``, ``Y [m, d]`` (float64 numpy), weights
``a``, ``b`` (None = uniform) and ``truth``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Problem", "FAMILIES", "make"]


@dataclass(frozen=True)
class Problem:
    name: str
    X: np.ndarray
    Y: np.ndarray
    a: np.ndarray | None
    b: np.ndarray | None
    truth: float

    @property
    def d(self) -> int:
        return int(self.X.shape[1])


def _spd(rng: np.random.Generator, d: int, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * rng.uniform(lo, hi, d)) @ Q.T


def _finish(name, rng, X, TX, a=None, split=False) -> Problem:
    n = X.shape[0]
    w = np.full(n, 1.0 / n) if a is None else a / a.sum()
    truth = float(np.sum(w * np.sum((X - TX) ** 2, axis=1)))
    if split:  # target point i becomes c_i copies of weight w_i / c_i
        c = rng.integers(1, 3, n)
        Y = np.repeat(TX, c, axis=0)
        b = np.repeat(w / c, c)
    else:
        Y, b = TX, (None if a is None else w)
    p = rng.permutation(Y.shape[0])
    Y = Y[p]
    b = None if b is None else b[p]
    return Problem(name, X, np.ascontiguousarray(Y), None if a is None else w, b, truth)


def gauss_affine(n: int, seed: int = 0, d: int = 32) -> Problem:
    """One anisotropic Gaussian, SPD affine map (the issue's 'one Gaussian cluster')."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.3, 2.0, d)
    return _finish("gauss_affine", rng, X, X @ _spd(rng, d) + rng.standard_normal(d))


def clusters(n: int, seed: int = 0, d: int = 32) -> Problem:
    """10 Gaussian clusters, SPD affine map (the issue's 10-cluster family)."""
    rng = np.random.default_rng(seed)
    cent = 4.0 * rng.standard_normal((10, d))
    X = cent[rng.integers(0, 10, n)] + rng.standard_normal((n, d))
    return _finish("clusters", rng, X, X @ _spd(rng, d) + 0.5 * rng.standard_normal(d))


def cluster_swap(n: int, seed: int = 0, d: int = 16) -> Problem:
    """Anisotropic clusters; ``phi = |x|^2 / 2 + beta max_k (w_k . x + c_k)`` (convex,
    piecewise): every point moves by ``beta w_k`` of its region, so mass moves across clusters."""
    rng = np.random.default_rng(seed)
    k = 6
    cent = 5.0 * rng.standard_normal((k, d))
    scales = rng.uniform(0.2, 1.5, (k, d))
    lab = rng.integers(0, k, n)
    X = cent[lab] + rng.standard_normal((n, d)) * scales[lab]
    W = rng.standard_normal((k, d))
    c = rng.standard_normal(k)
    reg = np.argmax(X @ W.T + c, axis=1)
    return _finish("cluster_swap", rng, X, X + 3.0 * W[reg])


def softplus(n: int, seed: int = 0, d: int = 16) -> Problem:
    """Separable convex ``phi = |x|^2/2 + (alpha/gamma) sum softplus(gamma x_k)``:
    ``T(x) = x + alpha sigmoid(gamma x)`` (non-linear, coordinate-wise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return _finish("softplus", rng, X, X + 2.0 / (1.0 + np.exp(-3.0 * X)))


def student_t(n: int, seed: int = 0, d: int = 64) -> Problem:
    """Heavy tails: Student-t with 4 degrees of freedom, SPD affine map (the issue's 30 % case)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_t(4, (n, d))
    return _finish("student_t", rng, X, X @ _spd(rng, d) + 0.3 * rng.standard_normal(d))


def lowrank(n: int, seed: int = 0, d: int = 128, r: int = 8) -> Problem:
    """Embedding-like: rank-``r`` data (plus 1 % noise) in ``d`` dimensions; SPD affine map
    ``I + U diag(s) U^T`` (rank-r change plus identity)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, r)) * np.linspace(2.0, 0.5, r)
    Wm = rng.standard_normal((r, d)) / np.sqrt(r)
    X = Z @ Wm + 0.01 * rng.standard_normal((n, d))
    U, _ = np.linalg.qr(rng.standard_normal((d, r)))
    A = np.eye(d) + (U * rng.uniform(-0.5, 1.0, r)) @ U.T
    return _finish(f"lowrank{d}", rng, X, X @ A + 0.2 * rng.standard_normal(d))


def duplicates(n: int, seed: int = 0, d: int = 4) -> Problem:
    """Duplicates and ties: points of the grid {-2..2}^4 (625 values, many repeats),
    ``T(x) = 1.5 x + c`` (gradient of a convex quadratic)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-2, 3, (n, d)).astype(np.float64)
    return _finish("duplicates", rng, X, 1.5 * X + np.array([0.5, -0.25, 0.0, 1.0])[:d])


def weights_nm(n: int, seed: int = 0, d: int = 8) -> Problem:
    """n != m via weights: integer-count weights 1..3 on X, the softplus map, each target
    point split into 1 or 2 copies sharing its weight (m ~ 1.5 n)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    a = rng.integers(1, 4, n).astype(np.float64)
    TX = X + 1.5 / (1.0 + np.exp(-2.0 * X))
    return _finish("weights_nm", rng, X, TX, a=a, split=True)


def weights_real(n: int, seed: int = 0, d: int = 8) -> Problem:
    """General (irrational-looking) weights: exponential weights on X, SPD affine map,
    targets split in 1 or 2 copies (the rounded-supply path of the sparse route)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    a = rng.exponential(1.0, n) + 0.05
    return _finish("weights_real", rng, X, X @ _spd(rng, d) + 1.0, a=a, split=True)


def plane(n: int, seed: int = 0) -> Problem:
    """Low-dimensional: uniform square in 2-d, softplus-type map plus a rotation-free shear
    ``T(x) = S x + alpha sigmoid(x)`` with S SPD (sum of convex gradients)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, (n, 2))
    S = np.array([[1.3, 0.4], [0.4, 0.8]])
    return _finish("plane", rng, X, X @ S + 1.0 / (1.0 + np.exp(-2.0 * X)))


FAMILIES = {
    "gauss_affine": gauss_affine,
    "clusters": clusters,
    "cluster_swap": cluster_swap,
    "softplus": softplus,
    "student_t": student_t,
    "lowrank128": lambda n, seed=0: lowrank(n, seed, d=128),
    "lowrank768": lambda n, seed=0: lowrank(n, seed, d=768),
    "duplicates": duplicates,
    "weights_nm": weights_nm,
    "weights_real": weights_real,
    "plane": plane,
}


def make(name: str, n: int, seed: int = 0) -> Problem:
    return FAMILIES[name](n, seed)
