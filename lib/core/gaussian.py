"""Gaussian (Bures-Wasserstein) closed forms used by the ``inner="gaussian"`` OTDD label cost.

For two Gaussians N(mu1, S1), N(mu2, S2) the squared 2-Wasserstein distance is

.. math::

    W_2^2 = \\|\\mu_1 - \\mu_2\\|^2 + \\mathrm{Bures}^2(S_1, S_2),\\qquad
    \\mathrm{Bures}^2(S_1, S_2) = \\operatorname{tr} S_1 + \\operatorname{tr} S_2
        - 2 \\operatorname{tr}\\big(S_1^{1/2} S_2 S_1^{1/2}\\big)^{1/2}

(Dowson & Landau 1982; Gelbrich 1990; used as the label-to-label cost in Alvarez-Melis &
Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020, eq. 7).

Everything is float64. Square roots use a symmetric eigendecomposition with eigenvalues
clamped at 0, so a PSD matrix that round-off made slightly indefinite still has a real,
symmetric, PSD root. Identical statistics give exactly 0 (short-circuited, since the trace
formula cancels only up to round-off).
"""

from __future__ import annotations

import torch

__all__ = ["covariance", "sqrtm_psd", "bures_sq", "gaussian_w2_sq_table"]


def covariance(X: torch.Tensor, ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[d]`` and unbiased covariance ``[d, d]`` (``1/(n-1)``) of ``X [n, d]``, float64.

    ``ridge > 0`` adds ``ridge * tr(S)/d`` to the diagonal (shrinkage; 0 by default).
    Requires ``n >= 2`` (the caller checks and raises a named error).
    """
    X = X.to(torch.float64)
    mu = X.mean(0)
    Z = X - mu
    S = (Z.T @ Z) / (X.shape[0] - 1)
    S = 0.5 * (S + S.T)
    if ridge > 0:
        S = S + ridge * torch.trace(S) / S.shape[0] * torch.eye(
            S.shape[0], dtype=S.dtype, device=S.device
        )
    return mu, S


def sqrtm_psd(S: torch.Tensor) -> torch.Tensor:
    """Symmetric PSD square root of a (batch of) symmetric matrix ``[..., d, d]``.

    ``S = V diag(w) V^T`` (``eigh``), root ``V diag(sqrt(max(w, 0))) V^T``, symmetrised.
    """
    S = 0.5 * (S + S.transpose(-1, -2))
    w, V = torch.linalg.eigh(S)
    R = (V * w.clamp(min=0.0).sqrt().unsqueeze(-2)) @ V.transpose(-1, -2)
    return 0.5 * (R + R.transpose(-1, -2))


def _fidelity(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """``tr (S1^{1/2} S2 S1^{1/2})^{1/2} = ||S2^{1/2} S1^{1/2}||_*`` (nuclear norm), ``[...]``.

    Since ``S1^{1/2} S2 S1^{1/2} = (R2 R1)^T (R2 R1)``, its root's eigenvalues are the
    singular values of ``R2 R1``. Computing them by SVD keeps an absolute error of
    ``eps * ||R2 R1||`` instead of ``sqrt(eps * ||M||)`` for the square roots of the tiny,
    round-off-dominated eigenvalues of ``M`` (singular covariances, e.g. constant pixels), and
    is symmetric in (S1, S2) up to round-off.
    """
    return torch.linalg.svdvals(R2 @ R1).sum(-1)


def bures_sq(
    S1: torch.Tensor,
    S2: torch.Tensor,
    R1: torch.Tensor | None = None,
    R2: torch.Tensor | None = None,
) -> float:
    """``Bures^2(S1, S2)`` for two ``[d, d]`` covariances (roots ``R = S^{1/2}`` if known).

    Returns exactly 0.0 when ``S1`` and ``S2`` are identical; clamped at 0 against round-off.
    """
    if torch.equal(S1, S2):
        return 0.0
    S1 = S1.to(torch.float64)
    S2 = S2.to(torch.float64)
    R1 = sqrtm_psd(S1) if R1 is None else R1.to(torch.float64)
    R2 = sqrtm_psd(S2) if R2 is None else R2.to(torch.float64)
    val = torch.trace(S1) + torch.trace(S2) - 2.0 * _fidelity(R1, R2)
    return max(float(val), 0.0)


def gaussian_w2_sq_table(
    mu_a: torch.Tensor,
    S_a: torch.Tensor,
    R_a: torch.Tensor,
    mu_b: torch.Tensor,
    S_b: torch.Tensor,
    R_b: torch.Tensor,
    *,
    max_batch_bytes: int = 64 * 2**20,
) -> torch.Tensor:
    """All-pairs Gaussian ``W_2^2`` between classes of two datasets.

    Args:
        mu_a: ``[Ka, d]`` class means of dataset a; ``S_a``: ``[Ka, d, d]`` covariances;
            ``R_a``: ``[Ka, d, d]`` their PSD square roots (cached per dataset).
        mu_b: ``[Kb, d]``; ``S_b``, ``R_b``: ``[Kb, d, d]``.
        max_batch_bytes: memory for one batch of ``[*, d, d]`` products.

    Returns:
        ``[Ka, Kb]`` float64 table ``||mu_i - mu_j||^2 + Bures^2(S_i, S_j)``, exactly 0 where
        both the means and the covariances are identical.
    """
    Ka, d = mu_a.shape
    Kb = mu_b.shape[0]
    mean_term = ((mu_a[:, None, :] - mu_b[None, :, :]) ** 2).sum(-1)  # direct differences
    tr_a = torch.diagonal(S_a, dim1=-2, dim2=-1).sum(-1)
    tr_b = torch.diagonal(S_b, dim1=-2, dim2=-1).sum(-1)
    cross = torch.empty((Ka, Kb), dtype=torch.float64, device=mu_a.device)
    rows = max(1, int(max_batch_bytes // max(1, Kb * d * d * 8 * 3)))
    for s in range(0, Ka, rows):
        cross[s : s + rows] = _fidelity(R_a[s : s + rows, None], R_b[None])  # [r, Kb]
    bures = (tr_a[:, None] + tr_b[None, :] - 2.0 * cross).clamp(min=0.0)
    # identical covariances -> exactly 0 (checked only where the traces already agree)
    for i, j in (tr_a[:, None] == tr_b[None, :]).nonzero().tolist():
        if torch.equal(S_a[i], S_b[j]):
            bures[i, j] = 0.0
    return mean_term + bures
