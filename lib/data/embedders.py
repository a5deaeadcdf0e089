"""Embedders: turn a dataset's raw features (or text) into the float32 vectors OT compares.

Kinds (``EmbedderSpec.kind``):

``identity``
    The features themselves, as float32.
``torchscript``
    ``torch.jit.load(path)``: a TorchScript module mapping ``[b, d_in]`` float32 to
    ``[b, d_out]``.  Safe to load (no arbitrary Python code runs).  torch >= 2.10
    deprecates TorchScript (its DeprecationWarning on load is silenced here); a file ending
    in ``.pt2`` is loaded as a ``torch.export`` program instead (``torch.export.load``).
``torch``
    ``torch.load(path, weights_only=False)`` of a pickled ``torch.nn.Module``.
    **Trust**: unpickling runs arbitrary code from the file — only use model files you
    trust as much as the code of this pipeline (prefer ``torchscript``).
``sentence-transformers``
    A model directory on local disk (``SentenceTransformer(path)``), input = a text column.
    Needs ``pip install otaudit[text]``.  Loading is offline: ``HF_HUB_OFFLINE=1`` is set
    (if unset) before the import, and only local paths are accepted.
``random-projection``
    ``x @ G`` with ``G ~ N(0, 1/dim)`` of shape ``[d_in, dim]`` drawn from
    ``numpy.random.default_rng(seed)``: deterministic for a given (seed, d_in, dim).
``pca``
    Principal components fitted on the dataset's own features (``fit_data``; an array or an
    iterable of shards, accumulated in float64), projected onto the top ``dim`` components.
    Sign convention: the largest-magnitude entry of every component is positive.
    Note: two datasets embedded with ``pca`` live in *different* bases; compare PCA'd
    datasets only if that is what you mean (a shared basis needs one fit on both).

Devices: torch-based embedders run batched on :func:`resolve_device` — ``"auto"`` uses CUDA
when present; ``"auto"`` or ``"cuda"`` without a GPU falls back to CPU with ONE
:class:`~otaudit.errors.FallbackWarning` per process (also logged); the other kinds compute
with NumPy on the CPU. ``embedder_device(e)`` is the device an embedder computes on (the
``device`` column of ``datasets.parquet``).

Progress: ``embed(batch, progress=cb)`` calls ``cb(done_rows, total_rows)`` after every batch.

Every embedder's ``id`` is ``EmbedderSpec.id``: kind, output-relevant parameters,
:data:`EMBEDDER_VERSION` and (for model files) the sha256 of the model bytes, so a changed
model gives a cache miss.

Deviations from pipeline_api.md: ``make_embedder`` takes an extra keyword ``dataset=None``
(named in error messages); ``Embedder.embed`` takes an optional ``progress`` callback.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import ValidationError

from .. import config
from ..errors import FallbackWarning, InputError
from .manifest import EmbedderSpec

__all__ = [
    "EMBEDDER_VERSION",
    "Embedder",
    "Progress",
    "make_embedder",
    "resolve_device",
    "embedder_device",
    "IdentityEmbedder",
    "TorchEmbedder",
    "SentenceTransformerEmbedder",
    "RandomProjectionEmbedder",
    "PCAEmbedder",
]

log = logging.getLogger(__name__)

#: Version of this module's embedding code; part of every embedder id.
EMBEDDER_VERSION: int = config.EMBEDDER_VERSION

Progress = Callable[[int, int], None]

_fallback_warned: set[str] = set()


@runtime_checkable
class Embedder(Protocol):
    """Anything with a stable ``id`` and ``embed(batch) -> [rows, d_out] float32``."""

    id: str

    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray: ...


def _warn_fallback(device: str, message: str) -> None:
    """One :class:`FallbackWarning` per process and requested device."""
    if device not in _fallback_warned:
        _fallback_warned.add(device)
        log.warning(message)
        warnings.warn(message, FallbackWarning, stacklevel=3)


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for ``device`` ("auto" | "cpu" | "cuda" | "cuda:N").

    ``auto``: CUDA when available, else CPU; an explicit CUDA request without a GPU falls
    back to CPU too. Either fallback is ONE visible :class:`FallbackWarning` per process
    (per requested device); the device used is recorded in ``datasets.parquet``.
    """
    if device == "cpu":
        return torch.device("cpu")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _warn_fallback(device, "device: auto found no CUDA device; embedding on CPU")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if torch.cuda.is_available():
            dev = torch.device(device)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise InputError(
                    f"device {device!r} does not exist ({torch.cuda.device_count()} GPUs)",
                    field="embedder.device",
                    fix="use 'cuda' or 'auto'",
                )
            return dev
        _warn_fallback(
            device,
            f"embedder device {device!r} requested but CUDA is not available; "
            "embedding on CPU (set device: cpu to silence this)",
        )
        return torch.device("cpu")
    raise InputError(
        f"unknown device {device!r}",
        field="embedder.device",
        fix="use 'auto', 'cpu', 'cuda' or 'cuda:N'",
    )


def _as_matrix(batch: Any, dataset: str | None) -> np.ndarray:
    if isinstance(batch, list) and batch and isinstance(batch[0], str):
        raise InputError(
            "this embedder takes numeric features, got text",
            dataset=dataset,
            field="embedder",
            fix="use embedder kind sentence-transformers for a text column",
        )
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    arr = np.asarray(batch)
    if arr.dtype.kind not in "iufb":
        raise InputError(
            f"features have dtype {arr.dtype}, not numeric",
            dataset=dataset,
            field="features",
            fix="use numeric features or a text embedder",
        )
    if arr.ndim != 2:
        raise InputError(
            f"expected [rows, d] features, got shape {arr.shape}",
            dataset=dataset,
            field="features",
            fix="reshape each row to a vector",
        )
    return arr


class IdentityEmbedder:
    """The features as float32."""

    def __init__(self, spec: EmbedderSpec, dataset: str | None = None):
        self.id = spec.id
        self.dataset = dataset

    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray:
        out = np.ascontiguousarray(_as_matrix(batch, self.dataset), dtype=np.float32)
        if progress is not None:
            progress(len(out), len(out))
        return out


def _gathered(outs: list[np.ndarray], declared: int | None, dataset: str | None) -> np.ndarray:
    """The batches of a model embedder as one contiguous float32 array (``[0, 0]`` for no
    rows), checked against the manifest's declared ``dim``."""
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.ascontiguousarray(np.concatenate(outs, axis=0))
    return _check_declared_dim(out, declared, dataset)


def _check_declared_dim(out: np.ndarray, declared: int | None, dataset: str | None) -> np.ndarray:
    """A model embedder's output against the manifest's declared ``dim`` (if any)."""
    if declared is not None and out.ndim == 2 and out.shape[1] != declared:
        raise InputError(
            f"the model's output size is {out.shape[1]}, the manifest declares dim {declared}",
            dataset=dataset,
            field="embedder.dim",
            fix=f"set `dim: {out.shape[1]}` or remove `dim`",
        )
    return out


class TorchEmbedder:
    """A torch module (TorchScript or pickled nn.Module) applied in batches on a device."""

    def __init__(self, spec: EmbedderSpec, dataset: str | None = None):
        self.id = spec.id  # hashes the model file (raises InputError when missing)
        self.dataset = dataset
        self.rows_per_batch = spec.rows_per_batch
        self.declared_dim = spec.dim
        self.device = resolve_device(spec.device)
        path = spec.local_path
        assert path is not None  # validated by EmbedderSpec
        try:
            if spec.kind == "torchscript" and path.endswith(".pt2"):
                module = torch.export.load(path).module().to(self.device)
            elif spec.kind == "torchscript":
                with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript
                    warnings.filterwarnings(
                        "ignore", category=DeprecationWarning, message=r".*torch\.jit.*"
                    )
                    module = torch.jit.load(path, map_location=self.device)
            else:
                module = torch.load(path, map_location=self.device, weights_only=False)
        except (
            RuntimeError,
            ValueError,
            OSError,
            EOFError,
            AttributeError,
            ModuleNotFoundError,
        ) as e:
            hint = (
                "save it with torch.jit.save(torch.jit.script(model), path)"
                if spec.kind == "torchscript"
                else "save the nn.Module with torch.save(model, path); its class must be "
                "importable here"
            )
            raise InputError(
                f"cannot load {spec.kind} model {path!r} ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:160]})",
                dataset=dataset,
                field="embedder.path",
                fix=hint,
            ) from None
        if not isinstance(module, torch.nn.Module | torch.jit.ScriptModule):
            raise InputError(
                f"{path!r} holds a {type(module).__name__}, not a torch module",
                dataset=dataset,
                field="embedder.path",
                fix="save the nn.Module itself (not a state_dict) or use kind: torchscript",
            )
        if not (spec.kind == "torchscript" and path.endswith(".pt2")):
            module = module.eval()  # exported programs are already in inference form
        self.module = module

    @torch.no_grad()
    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray:
        X = _as_matrix(batch, self.dataset)
        n = len(X)
        outs: list[np.ndarray] = []
        for start in range(0, n, self.rows_per_batch):
            xb = torch.from_numpy(
                np.ascontiguousarray(X[start : start + self.rows_per_batch], dtype=np.float32)
            ).to(self.device)
            try:
                yb = self.module(xb)
            except (RuntimeError, TypeError, ValueError) as e:
                raise InputError(
                    f"the model failed on a [{len(xb)}, {X.shape[1]}] float32 batch "
                    f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                    dataset=self.dataset,
                    field="embedder",
                    fix="check the model's input dimension against the features",
                ) from None
            if not isinstance(yb, torch.Tensor) or yb.ndim != 2 or yb.shape[0] != len(xb):
                shape = tuple(yb.shape) if isinstance(yb, torch.Tensor) else type(yb).__name__
                raise InputError(
                    f"the model returned {shape} for {len(xb)} rows",
                    dataset=self.dataset,
                    field="embedder",
                    fix="the model must map [b, d_in] to [b, d_out]",
                )
            outs.append(yb.detach().to("cpu", torch.float32).numpy())
            if progress is not None:
                progress(min(start + self.rows_per_batch, n), n)
        return _gathered(outs, self.declared_dim, self.dataset)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory (offline)."""

    def __init__(self, spec: EmbedderSpec, dataset: str | None = None):
        self.dataset = dataset
        self.rows_per_batch = spec.rows_per_batch
        self.declared_dim = spec.dim
        path = spec.local_path
        assert path is not None
        if not os.path.isdir(path):
            raise InputError(
                f"model directory {path!r} does not exist",
                dataset=dataset,
                field="embedder.path",
                fix="give the local directory of a sentence-transformers model",
            )
        self.id = spec.id
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise InputError(
                "the sentence-transformers package is not installed",
                dataset=dataset,
                field="embedder.kind",
                fix="pip install otaudit[text]",
            ) from None
        self.device = resolve_device(spec.device)
        try:
            self.model = SentenceTransformer(path, device=str(self.device), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise InputError(
                f"cannot load sentence-transformers model {path!r} "
                f"({type(e).__name__}: {' '.join(str(e).split())[:160]})",
                dataset=dataset,
                field="embedder.path",
                fix="point path at a complete local model directory",
            ) from None

    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray:
        texts = list(batch)
        if texts and not all(isinstance(t, str) for t in texts):
            raise InputError(
                "sentence-transformers needs text rows",
                dataset=self.dataset,
                field="features",
                fix="point features at a string column",
            )
        outs = []
        n = len(texts)
        for start in range(0, n, self.rows_per_batch):
            chunk = texts[start : start + self.rows_per_batch]
            emb = self.model.encode(
                chunk,
                batch_size=self.rows_per_batch,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            outs.append(np.asarray(emb, dtype=np.float32))
            if progress is not None:
                progress(min(start + self.rows_per_batch, n), n)
        return _gathered(outs, self.declared_dim, self.dataset)


class RandomProjectionEmbedder:
    """``x @ G``, ``G ~ N(0, 1/dim)``, seeded (Johnson-Lindenstrauss)."""

    def __init__(self, spec: EmbedderSpec, dataset: str | None = None):
        self.id = spec.id
        self.dataset = dataset
        self.dim = int(spec.dim or 0)
        self.seed = spec.seed
        self._G: dict[int, np.ndarray] = {}

    def matrix(self, d_in: int) -> np.ndarray:
        """The projection matrix ``[d_in, dim]`` (float64)."""
        if d_in not in self._G:
            rng = np.random.default_rng(self.seed)
            self._G[d_in] = rng.standard_normal((d_in, self.dim)) / np.sqrt(self.dim)
        return self._G[d_in]

    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray:
        X = _as_matrix(batch, self.dataset)
        out = (X.astype(np.float64, copy=False) @ self.matrix(X.shape[1])).astype(np.float32)
        if progress is not None:
            progress(len(out), len(out))
        return out


class PCAEmbedder:
    """Projection on the top ``dim`` principal components of the fit data."""

    def __init__(self, spec: EmbedderSpec, dataset: str | None = None):
        self.id = spec.id
        self.dataset = dataset
        self.dim = spec.dim
        self._n = 0
        self._sum: np.ndarray | None = None
        self._outer: np.ndarray | None = None
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # [d_in, dim]

    def partial_fit(self, X: Any) -> PCAEmbedder:
        """Accumulate one shard (float64 sums; one pass, no data kept)."""
        A = _as_matrix(X, self.dataset).astype(np.float64, copy=False)
        if not np.isfinite(A).all():
            raise InputError(
                "PCA fit data contain NaN or inf",
                dataset=self.dataset,
                field="features",
                fix="drop or impute those rows",
            )
        if self._sum is None:
            self._sum = np.zeros(A.shape[1])
            self._outer = np.zeros((A.shape[1], A.shape[1]))
        elif A.shape[1] != self._sum.shape[0]:
            raise InputError(
                f"shards have dimensions {self._sum.shape[0]} and {A.shape[1]}",
                dataset=self.dataset,
                field="features",
                fix="give every row the same number of features",
            )
        # shift by the first shard's mean for numerical stability
        if self._n == 0:
            self._shift = A.mean(axis=0)
        B = A - self._shift
        self._n += len(A)
        self._sum += B.sum(axis=0)
        self._outer += B.T @ B  # type: ignore[operator]
        return self

    def finalize(self) -> PCAEmbedder:
        """Compute the components from the accumulated sums."""
        if self._n < 2 or self._sum is None or self._outer is None:
            raise InputError(
                "PCA needs at least 2 rows to fit",
                dataset=self.dataset,
                field="embedder",
                fix="use more data or embedder identity",
            )
        d = self._sum.shape[0]
        dim = int(self.dim or d)
        if dim > d:
            raise InputError(
                f"PCA dim {dim} exceeds the feature dimension {d}",
                dataset=self.dataset,
                field="embedder.dim",
                fix=f"use dim <= {d}",
            )
        mean_b = self._sum / self._n
        cov = (self._outer - self._n * np.outer(mean_b, mean_b)) / (self._n - 1)
        cov = (cov + cov.T) / 2
        w, V = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1][:dim]
        comps = V[:, order]
        idx = np.argmax(np.abs(comps), axis=0)
        signs = np.sign(comps[idx, np.arange(dim)])
        signs[signs == 0] = 1.0
        self.components_ = comps * signs
        self.mean_ = self._shift + mean_b
        self.explained_variance_ = w[order]
        return self

    def fit(self, fit_data: Any) -> PCAEmbedder:
        """Fit on an array ``[n, d]`` or an iterable of shard arrays."""
        if isinstance(fit_data, np.ndarray | torch.Tensor) or (
            isinstance(fit_data, list)
            and fit_data
            and not isinstance(fit_data[0], np.ndarray | torch.Tensor | list)
        ):
            self.partial_fit(fit_data)
        else:
            for shard in fit_data:
                self.partial_fit(shard)
        return self.finalize()

    def embed(self, batch: Any, progress: Progress | None = None) -> np.ndarray:
        if self.components_ is None or self.mean_ is None:
            raise InputError(
                "PCA embedder used before fitting",
                dataset=self.dataset,
                field="embedder",
                fix="pass fit_data to make_embedder",
            )
        X = _as_matrix(batch, self.dataset).astype(np.float64, copy=False)
        out = ((X - self.mean_) @ self.components_).astype(np.float32)
        if progress is not None:
            progress(len(out), len(out))
        return out


_KINDS: dict[str, type] = {
    "identity": IdentityEmbedder,
    "torchscript": TorchEmbedder,
    "torch": TorchEmbedder,
    "sentence-transformers": SentenceTransformerEmbedder,
    "random-projection": RandomProjectionEmbedder,
    "pca": PCAEmbedder,
}


def make_embedder(
    spec: EmbedderSpec | str | dict[str, Any],
    *,
    fit_data: np.ndarray | Iterable[np.ndarray] | None = None,
    dataset: str | None = None,
) -> Embedder:
    """Build the embedder of ``spec``; PCA is fitted on ``fit_data`` (the dataset itself)."""
    try:
        if not isinstance(spec, EmbedderSpec):
            try:
                spec = EmbedderSpec.model_validate(spec)
            except ValidationError as ve:
                err = ve.errors(include_url=False)[0]
                loc = ".".join(str(p) for p in err["loc"])
                raise InputError(
                    err["msg"],
                    dataset=dataset,
                    field=f"embedder.{loc}" if loc else "embedder",
                    fix="see docs/manifest.md, section Embedders",
                ) from None
        emb = _KINDS[spec.kind](spec, dataset)
        if spec.kind == "pca":
            if fit_data is None:
                raise InputError(
                    "the pca embedder needs fit data",
                    dataset=dataset,
                    field="embedder",
                    fix="pass fit_data (the dataset's features)",
                )
            emb.fit(fit_data)
    except InputError as e:  # e.g. a missing model file found while hashing it
        if e.dataset is None and dataset is not None:
            raise InputError(e.problem, dataset=dataset, field=e.field, fix=e.fix) from None
        raise
    return emb


def embedder_device(embedder: Any) -> str:
    """The device ``embedder`` computes on (``"cpu"``, ``"cuda:0"``, ...): torch-based
    embedders carry a ``device``; the others compute with NumPy on the CPU."""
    dev = getattr(embedder, "device", None)
    if dev is None:
        return "cpu"
    dev = torch.device(dev)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)
