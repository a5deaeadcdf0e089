"""Closed forms of the Gaussian (Bures-Wasserstein) label cost, against independent oracles."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from otaudit.core.gaussian import bures_sq, covariance, gaussian_w2_sq_table, sqrtm_psd


def _spd(rng: np.random.Generator, d: int, cond: float = 50.0) -> torch.Tensor:
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.geomspace(1.0, cond, d)
    return torch.from_numpy((Q * w) @ Q.T)


def _bures_scipy(S1: np.ndarray, S2: np.ndarray) -> float:
    """Oracle: scipy's Schur-based sqrtm (independent of our eigh-based root)."""
    R1 = np.real(scipy.linalg.sqrtm(S1))
    M = np.real(scipy.linalg.sqrtm(R1 @ S2 @ R1))
    return float(np.trace(S1) + np.trace(S2) - 2 * np.trace(M))


def test_bures_diagonal_closed_form():
    # commuting (diagonal) covariances: Bures^2 = ||sqrt(d1) - sqrt(d2)||^2 exactly in math;
    # tolerance 1e-12 absolute on O(10) values = float64 round-off of a few eigh calls.
    d1 = torch.tensor([1.0, 4.0, 9.0, 0.25], dtype=torch.float64)
    d2 = torch.tensor([4.0, 1.0, 16.0, 1.0], dtype=torch.float64)
    expected = float(((d1.sqrt() - d2.sqrt()) ** 2).sum())  # 1 + 1 + 1 + 0.25
    assert expected == 3.25
    assert abs(bures_sq(torch.diag(d1), torch.diag(d2)) - expected) < 1e-12


def test_bures_commuting_rotated():
    # same eigenvectors Q: Bures^2 = sum (sqrt(l1) - sqrt(l2))^2; tolerance 1e-10 relative
    # (eigh of a rotated matrix, condition number <= 100).
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    l1 = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 13.0])
    l2 = np.array([2.0, 1.0, 7.0, 5.0, 0.5, 100.0])
    S1 = torch.from_numpy((Q * l1) @ Q.T)
    S2 = torch.from_numpy((Q * l2) @ Q.T)
    expected = float(((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum())
    assert abs(bures_sq(S1, S2) - expected) <= 1e-10 * expected


def test_bures_matches_scipy_oracle_and_is_symmetric():
    # scipy.linalg.sqrtm (Schur) vs our eigh roots; condition 50 -> agreement to ~1e-10 rel.
    rng = np.random.default_rng(1)
    for d in (2, 5, 13):
        S1, S2 = _spd(rng, d), _spd(rng, d, cond=10.0)
        ours = bures_sq(S1, S2)
        oracle = _bures_scipy(S1.numpy(), S2.numpy())
        assert abs(ours - oracle) <= 1e-9 * max(1.0, oracle)
        assert abs(ours - bures_sq(S2, S1)) <= 1e-9 * max(1.0, oracle)


def test_bures_identical_is_exactly_zero_and_one_dimensional_case():
    rng = np.random.default_rng(2)
    S = _spd(rng, 7)
    assert bures_sq(S, S.clone()) == 0.0
    # 1-D: W2^2 between N(0, s1^2) and N(0, s2^2) is (s1 - s2)^2 (exact in float64 here)
    assert (
        bures_sq(
            torch.tensor([[4.0]], dtype=torch.float64), torch.tensor([[9.0]], dtype=torch.float64)
        )
        == 1.0
    )


def test_sqrtm_psd_squares_back_and_handles_singular():
    rng = np.random.default_rng(3)
    S = _spd(rng, 8)
    R = sqrtm_psd(S)
    assert torch.equal(R, R.T)  # symmetrised
    assert torch.allclose(R @ R, S, rtol=0, atol=1e-10 * float(S.abs().max()))
    # rank-1 PSD matrix (singular, as for digits' constant pixels): root is real and PSD
    v = torch.tensor([[1.0], [2.0], [2.0]], dtype=torch.float64)
    P = v @ v.T
    Rp = sqrtm_psd(P)
    assert torch.isfinite(Rp).all()
    assert torch.allclose(Rp @ Rp, P, atol=1e-7)  # sqrt of round-off eigenvalues ~1e-8
    assert float(torch.linalg.eigvalsh(Rp).min()) >= -1e-7


def test_covariance_is_unbiased_and_table_matches_pairwise():
    rng = np.random.default_rng(4)
    X = torch.from_numpy(rng.standard_normal((30, 4)))
    mu, S = covariance(X)
    assert torch.allclose(S, torch.from_numpy(np.cov(X.numpy(), rowvar=False)), atol=1e-13)
    assert torch.allclose(mu, X.mean(0), atol=0)
    mus = torch.from_numpy(rng.standard_normal((3, 4)))
    covs = torch.stack([_spd(rng, 4) for _ in range(3)])
    roots = sqrtm_psd(covs)
    T = gaussian_w2_sq_table(mus, covs, roots, mus[:2], covs[:2], roots[:2])
    assert T.shape == (3, 2)
    assert T[0, 0] == 0.0 and T[1, 1] == 0.0  # identical (mu, S): exactly 0
    for i in range(3):
        for j in range(2):
            expected = float(((mus[i] - mus[j]) ** 2).sum()) + bures_sq(covs[i], covs[j])
            # batched vs single eigvalsh: same math, round-off only
            assert abs(float(T[i, j]) - expected) <= 1e-10 * max(1.0, expected)
