"""Input checking and conversion shared by the numerical core.

Inputs may be numpy arrays or torch tensors (CPU or CUDA), float32 or float64.
Computation happens in torch on the input's device; costs and certificates are evaluated
in float64 (float32 is accepted as input, never used to certify a bound).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "as_points",
    "as_labels",
    "check_dims",
    "check_pair",
    "device_of",
    "as_weights",
]


def device_of(*arrays: Any) -> torch.device:
    """The torch device of the first torch tensor among ``arrays`` (CPU otherwise)."""
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def as_points(
    x: Any,
    *,
    name: str = "X",
    dataset: str | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Validate a point cloud ``[n, d]`` and return it as a torch tensor.

    Raises InputError for: wrong rank, empty, non-numeric, NaN/inf.
    """
    ds = dataset if dataset is not None else name
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise InputError(
                f"cannot convert to an array ({e})",
                dataset=ds,
                field="features",
                fix="pass a numeric [n, d] numpy array or torch tensor",
            ) from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(
                f"features are not numeric (dtype {arr.dtype})",
                dataset=ds,
                field="features",
                fix="embed or encode the features as numbers first",
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise InputError(
            "features are complex", dataset=ds, field="features", fix="pass real-valued features"
        )
    if t.ndim == 1:
        raise InputError(
            f"expected a 2-D [n, d] array, got shape {tuple(t.shape)}",
            dataset=ds,
            field="features",
            fix="reshape to [n, 1] for 1-D data",
        )
    if t.ndim != 2:
        raise InputError(
            f"expected a 2-D [n, d] array, got shape {tuple(t.shape)}",
            dataset=ds,
            field="features",
            fix="flatten each sample to a vector",
        )
    if t.shape[0] == 0:
        raise InputError(
            "the dataset is empty (0 rows)",
            dataset=ds,
            field="features",
            fix="check the filter or the path that produced it",
        )
    if t.shape[1] == 0:
        raise InputError(
            "features have dimension 0",
            dataset=ds,
            field="features",
            fix="select at least one feature column",
        )
    if device is not None:
        t = t.to(device)
    t = t.to(dtype)
    finite = torch.isfinite(t).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise InputError(
            f"{bad.numel()} rows contain NaN or inf (first at row {int(bad[0])})",
            dataset=ds,
            field="features",
            fix="drop or impute those rows before computing distances",
        )
    return t.contiguous()


def as_labels(
    y: Any, n: int, *, name: str = "y", dataset: str | None = None
) -> tuple[np.ndarray, list[Any]]:
    """Validate labels of any hashable type; return (codes [n] int64, classes).

    ``classes`` is sorted when the labels are mutually comparable (so codes do not depend on
    the order of appearance), else in order of first appearance.
    """
    ds = dataset if dataset is not None else name
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if arr.ndim != 1:
        raise InputError(
            f"labels must be 1-D, got shape {arr.shape}",
            dataset=ds,
            field="labels",
            fix="pass one label per row",
        )
    if arr.shape[0] != n:
        raise InputError(
            f"{arr.shape[0]} labels for {n} rows",
            dataset=ds,
            field="labels",
            fix="pass exactly one label per row",
        )
    values = arr.tolist()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and v != v):
            raise InputError(
                f"label missing (None/NaN) at row {i}",
                dataset=ds,
                field="labels",
                fix="drop unlabeled rows or fill them in",
            )
    try:
        classes = sorted(set(values))
    except TypeError:
        classes = list(dict.fromkeys(values))
    index = {c: k for k, c in enumerate(classes)}
    codes = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return codes, classes


def as_weights(w: Any, n: int, *, dataset: str, device: torch.device) -> torch.Tensor:
    """Uniform weights if ``w`` is None, else validated non-negative weights summing to 1."""
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    t = (
        torch.as_tensor(
            np.asarray(w) if not isinstance(w, torch.Tensor) else w, dtype=torch.float64
        )
        .to(device)
        .flatten()
    )
    if t.numel() != n:
        raise InputError(
            f"{t.numel()} weights for {n} points",
            dataset=dataset,
            field="weights",
            fix="pass one weight per point",
        )
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or float(t.sum()) <= 0:
        raise InputError(
            "weights must be finite, non-negative, with a positive sum",
            dataset=dataset,
            field="weights",
            fix="check the weights",
        )
    return t / t.sum()


def check_dims(
    d_x: int,
    d_y: int,
    name_x: str,
    name_y: str,
    *,
    what: str = "d",
    fix: str = "embed both datasets with the same embedder",
) -> None:
    """Two datasets must live in the same dimension (the one home of that check: point
    clouds, dataset statistics, sliced sketches). ``what`` names the dimension."""
    if d_x != d_y:
        raise InputError(
            f"dimension mismatch: {name_x!r} has {what}={d_x}, {name_y!r} has {what}={d_y}",
            dataset=f"{name_x} vs {name_y}",
            field="features",
            fix=fix,
        )


def check_pair(X: torch.Tensor, Y: torch.Tensor, name_x: str = "X", name_y: str = "Y") -> None:
    """Both point clouds must live in the same dimension."""
    check_dims(int(X.shape[1]), int(Y.shape[1]), name_x, name_y)
