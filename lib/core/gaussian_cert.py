"""Rigorous floating-point margins for the Gaussian (Bures-Wasserstein) label cost.

The label cost of ``inner="gaussian"`` is defined on the class point clouds: with the exact
(real-arithmetic) mean ``mu`` and unbiased covariance ``S`` (plus the ridge, if any) of the
float points of each class,

    T_true = W_2^2(N(mu_a, S_a), N(mu_b, S_b)) = ||mu_a - mu_b||^2 + Bures^2(S_a, S_b).

The table holds the float64 evaluation ``T~`` from the stored statistics (mean ``mu~``,
covariance ``S~``, symmetric root ``R~``; :mod:`otaudit.core.gaussian`). This module bounds
``|T~ - T_true|`` a posteriori (IEEE float64, ``u = 2^-53``, ``gamma_k = k u / (1 - k u)``,
any summation order and FMA: Higham §3.1, §3.5). Subnormal underflow is not modelled
beyond the slack factors: statistics near 1e-300 are out of scope (data are rescaled
upstream; see :func:`otaudit.core.certify.scale_points`).

Step 1, per class (:func:`class_radius`): a radius ``r`` with
``W(N(mu, S), N(mu~, R~ R~^T)) <= r``. ``W`` between Gaussians is a metric, and
``W^2 = ||mu - mu~||^2 + Bures^2(S, R~R~^T)``, ``Bures^2(A, B) <= ||A^{1/2} - B^{1/2}||_F^2
<= ||A - B||_1`` for PSD ``A, B`` (Procrustes form with ``U = I``, then the Powers-Stormer
inequality), and ``||X||_1 <= sqrt(d) ||X||_F``. With ``D = X - mu~`` (exact reals) and
``delta = mu - mu~ = mean_i D_i``:

* ``D' = fl(X - mu~)``, ``|D - D'| <= u' |D'|`` (``u' = u (1 + 2u)``); ``m' = fl(mean D')``,
  so ``|delta_k| <= |m'_k| + (gamma_n + 2 u') mean_i |D'_ik|`` (the mean of ``|D'|`` is
  itself inflated by ``1 + gamma_n``).
* ``S0 = (D^T D - n delta delta^T) / (n - 1)`` exactly (``sum_i D_i = n delta``);
  ``G' = fl(fl(D'^T D') / (n - 1))`` errs by at most
  ``((gamma_n + 3u) ||D'||_F^2 + n ||delta||^2) / (n - 1) + u ||G'||_F`` in Frobenius norm
  (``|fl(A^T A) - A^T A| <= gamma_n |A|^T |A|``, ``|| |A|^T |A| ||_F <= ||A||_F^2``).
* ridge ``rho``: ``S = S0 + rho tr(S0)/d I``, so the ridge adds ``rho ||S0 - G'||_F`` and a
  few roundings of ``rho tr(G')/d``.
* ``||S~ - R~ R~^T||_F <= ||fl(S~ - fl(R~ R~^T))||_F (1 + 2u) + gamma_d ||R~||_F^2``.

Step 2, per pair (:func:`table_error`): an interval on
``W~ = W(N(mu~_a, R~_a R~_a^T), N(mu~_b, R~_b R~_b^T))`` from the float statistics, which are
exact inputs:

* mean term: direct differences, squares and a sum of ``d`` terms: relative ``gamma_{d+2}``.
* ``Bures^2 = min_U ||R~_a - R~_b U||_F^2`` over orthogonal ``U`` (``R~`` is exactly
  symmetric). Upper: the computed ``U~ = fl(W V^T)`` is not exactly orthogonal; its polar
  factor ``Q`` satisfies ``||U~ - Q||_2 <= eps_U``, ``eps_U >= ||U~^T U~ - I||_2``
  (singular values: ``|s - 1| <= |s^2 - 1|``), so
  ``Bures <= ||R~_a - R~_b U~||_F + ||R~_b||_F eps_U``, the first norm bounded from the
  computed difference (``gamma_d ||R~_b||_F ||U~||_F`` for the product, ``2u`` for the
  subtraction, ``gamma_{d^2}`` for the sum of squares). Lower:
  ``Bures^2 = ||R~_a||_F^2 + ||R~_b||_F^2 - 2 ||R~_b R~_a||_*`` and, for the computed SVD
  ``M~ = fl(R~_b R~_a) ~ W diag(s) V^T``, ``||R~_b R~_a||_* <= ||W||_2 ||V||_2 sum s +
  sqrt(d) (||M~ - W diag(s) V^T||_F + gamma_d ||R~_b||_F ||R~_a||_F)`` with
  ``||W||_2^2 <= 1 + ||W^T W - I||_F`` (a residual bound: the eigen/singular-value
  perturbation of the computed factorisation, no assumption on the SVD's accuracy). This
  side cancels (width ``~ d^{3/2} u ||S||``, honest: it is a lower bound).

Step 3: ``W_true`` lies in ``[W~_lo - r_a - r_b, W~_hi + r_a + r_b]`` (triangle inequality),
so ``T_true`` in the squares of that interval (lower clamped at 0); the table's error is
``err = max(T~ - lo, hi - T~)`` inflated for the float evaluation of these bounds. Classes
whose sorted point sets are identical have ``T_true = 0 = T~`` and ``err = 0`` exactly.

The radius is dominated by the ``sqrt(||S - S~||_1)`` term (``~ sqrt(d n u) spread``): a
rigorous but pessimistic worst-case bound (e.g. ~1e-5 relative on digits class costs).
"""

from __future__ import annotations

import math

import torch

from .certify import U64, gamma

__all__ = ["class_radius", "table_error", "frob_bounds"]

_U2 = U64 * (1.0 + 2.0 * U64)


def _fro(A: torch.Tensor) -> torch.Tensor:
    """Computed Frobenius norms over the last two axes (inflate by the caller)."""
    return torch.sqrt((A * A).sum((-2, -1)))


def frob_bounds(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(up, sq_lo)``: upper bounds on ``||R||_F`` and lower bounds on ``||R||_F^2`` for a
    batch ``[..., d, d]`` (sum of ``d^2`` squares: ``gamma_{d^2+1}``; the root: ``u``)."""
    d = R.shape[-1]
    g = gamma(d * d + 2)
    sq = (R * R).sum((-2, -1))
    return torch.sqrt(sq * (1.0 + g)) * (1.0 + 2 * U64), sq * (1.0 - g)


def class_radius(
    X: torch.Tensor, mu: torch.Tensor, S: torch.Tensor, R: torch.Tensor, ridge: float = 0.0
) -> float:
    """A rigorous bound ``r >= W(N(mean X, cov X), N(mu, R R^T))`` (real mean and unbiased
    covariance of the float points ``X [n, d]``, ridge as in
    :func:`otaudit.core.gaussian.covariance`), for stored float64 statistics ``mu [d]``,
    ``S [d, d]`` and an exactly symmetric ``R [d, d]`` (see the module docstring, step 1).
    ``inf`` when ``R`` is not exactly symmetric or ``n < 2``."""
    X = X.to(torch.float64)
    n, d = X.shape
    if n < 2 or not torch.equal(R, R.T):
        return math.inf
    gn = gamma(n + 2)
    Dp = X - mu
    m = Dp.mean(0)
    mabs = Dp.abs().mean(0) * (1.0 + gn)
    dk = m.abs() + (gn + 2 * _U2) * mabs
    e_mu = float(torch.sqrt((dk * dk).sum())) * (1.0 + (d + 4) * U64)
    G = (Dp.T @ Dp) / (n - 1)
    dfro2 = float((Dp * Dp).sum()) * (1.0 + gn)
    gfro = float(_fro(G)) * (1.0 + gamma(d * d + 2))
    eG = ((gn + 3 * U64) * dfro2 + n * e_mu * e_mu) / (n - 1) * (1.0 + 4 * U64) + U64 * gfro
    Gr = G
    if ridge > 0:
        Gr = G + ridge * torch.trace(G) / d * torch.eye(d, dtype=G.dtype, device=G.device)
        eG = eG * (1.0 + ridge) + 4 * U64 * (1.0 + ridge * math.sqrt(d)) * gfro
    e_S = float(_fro(S - Gr)) * (1.0 + gamma(d * d + 4)) + eG
    RR = R @ R.T
    r_up, _ = frob_bounds(R)
    e_R = float(_fro(S - RR)) * (1.0 + gamma(d * d + 4)) + gamma(d + 1) * float(r_up) ** 2
    e1 = math.sqrt(d) * (e_S + e_R) * (1.0 + 8 * U64)  # trace norm
    return math.sqrt(e_mu * e_mu + e1) * (1.0 + 8 * U64)


def _orth_defect(A: torch.Tensor, At: torch.Tensor) -> torch.Tensor:
    """An upper bound on ``||A^T A - I||_2`` (via Frobenius) for computed ``fl(At @ A)``."""
    d = A.shape[-1]
    eye = torch.eye(d, dtype=A.dtype, device=A.device)
    a_up, _ = frob_bounds(A)
    return _fro(At @ A - eye) * (1.0 + gamma(d * d + 4)) + gamma(d + 2) * a_up * a_up


def table_error(
    value: torch.Tensor,
    mean_term: torch.Tensor,
    bures_hat: torch.Tensor,
    parts: dict[str, torch.Tensor],
    fa: torch.Tensor,
    fb: torch.Tensor,
    ra: torch.Tensor,
    rb: torch.Tensor,
    d: int,
) -> torch.Tensor:
    """Entry-wise ``err >= |value - T_true|`` (module docstring, steps 2-3) for a block of
    pairs ``[r, Kb]``: ``parts`` from :func:`otaudit.core.gaussian.bures_parts` (``M``,
    ``W``, ``s``, ``Vh``, ``U``, ``D``), ``fa``/``fb`` the Frobenius norms of the roots
    (:func:`frob_bounds`: ``(up, sq_lo)`` stacked ``[2, r, 1]`` / ``[2, 1, Kb]``), ``ra``,
    ``rb`` the class radii (broadcastable to ``[r, Kb]``)."""
    u = U64
    sqd = math.sqrt(d)
    gd = gamma(d + 2)
    fa_up, fa_sq = fa[0], fa[1]
    fb_up, fb_sq = fb[0], fb[1]
    # mean term of the stored means: relative gamma_{d+2}
    g = gamma(d + 2)
    m_lo = mean_term * (1.0 - 2 * g)
    m_hi = mean_term * (1.0 + 2 * g)
    # Bures upper via the near-orthogonal U~
    U = parts["U"]
    eps_u = _orth_defect(U, U.transpose(-1, -2))
    u_up, _ = frob_bounds(U)
    dnorm = torch.sqrt(bures_hat.clamp(min=0.0) * (1.0 + gamma(d * d + 2))) * (1.0 + 4 * u)
    b_hi = dnorm + gd * fb_up * u_up + fb_up * eps_u
    b_hi = torch.where(eps_u < 0.5, b_hi, fa_up + fb_up)  # U = I fallback: ||R_a - R_b||
    b_hi = torch.minimum(b_hi, (fa_up + fb_up) * (1.0 + 2 * u))
    # Bures^2 lower via an upper bound on the nuclear norm of R_b R_a
    W, s, Vh = parts["W"], parts["s"], parts["Vh"]
    Ws = W * s.unsqueeze(-2)
    res = _fro(parts["M"] - Ws @ Vh) * (1.0 + gamma(d * d + 4))
    w_up, _ = frob_bounds(W)
    v_up, _ = frob_bounds(Vh)
    smax = s.amax(-1)
    res = res + gamma(d + 2) * w_up * smax * v_up * (1.0 + 2 * u)
    nw = torch.sqrt(1.0 + _orth_defect(W, W.transpose(-1, -2))) * (1.0 + 2 * u)
    nv = torch.sqrt(1.0 + _orth_defect(Vh.transpose(-1, -2), Vh)) * (1.0 + 2 * u)
    ssum = s.sum(-1) * (1.0 + gamma(d + 2))
    nuc = (nw * nv * ssum + sqd * (res + gd * fa_up * fb_up)) * (1.0 + 8 * u)
    b2_lo = ((fa_sq + fb_sq) * (1.0 - 2 * u) - 2.0 * nuc).clamp(min=0.0)
    # W of the stored statistics, then of the true class statistics
    w_hi = torch.sqrt((m_hi + b_hi * b_hi) * (1.0 + 4 * u)) * (1.0 + 2 * u) + ra + rb
    w_lo = torch.sqrt((m_lo + b2_lo) * (1.0 - 4 * u)) * (1.0 - 2 * u) - (ra + rb) * (1.0 + 2 * u)
    w_lo = w_lo.clamp(min=0.0)
    hi = w_hi * w_hi * (1.0 + 4 * u)
    lo = w_lo * w_lo * (1.0 - 4 * u)
    err = torch.maximum(value - lo, hi - value).clamp(min=0.0) * (1.0 + 8 * u)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
