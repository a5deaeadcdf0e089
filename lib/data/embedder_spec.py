"""The manifest's embedder spec (``embedder: identity`` or ``{kind: ..., path: ...}``): its
validation and its content-addressed id (part of every embedding cache key)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .. import config
from ..errors import InputError
from .spec_base import _DEVICE_RE, _err, _Model

__all__ = ["EmbedderSpec", "EMBEDDER_KINDS"]

EMBEDDER_KINDS = (
    "identity",
    "torchscript",
    "torch",
    "sentence-transformers",
    "random-projection",
    "pca",
)
_MODEL_KINDS = {"torchscript", "torch", "sentence-transformers"}


# --- embedder -------------------------------------------------------------------------

_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _hash_path(path: str) -> str:
    """sha256 of a model file's bytes (or of every file of a model directory)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
    else:
        files = [p]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        digest = _HASH_CACHE.get(key)
        if digest is None:
            fh = hashlib.sha256()
            with open(f, "rb") as stream:
                for chunk in iter(lambda s=stream: s.read(1 << 20), b""):
                    fh.update(chunk)
            digest = fh.hexdigest()
            _HASH_CACHE[key] = digest
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(digest.encode())
    return h.hexdigest()


class EmbedderSpec(_Model):
    """How a dataset's raw features are turned into the vectors OT compares.

    YAML: ``identity`` (string shorthand) or a mapping ``{kind: ..., path: ..., dim: ...}``.
    """

    kind: Literal[
        "identity", "torchscript", "torch", "sentence-transformers", "random-projection", "pca"
    ] = "identity"
    #: Local model file (torchscript/torch) or model directory (sentence-transformers).
    path: str | None = None
    #: Output dimension (random-projection, pca); for a model kind, the output size it
    #: is expected to have (checked against the model's metadata in preflight and against
    #: its output when embedding; optional).
    dim: int | None = Field(default=None, gt=0)
    seed: int = 0
    #: Rows per forward pass (``batch_size`` is accepted as a deprecated alias).
    rows_per_batch: int = Field(default=config.EMBED_ROWS_PER_BATCH, gt=0)
    #: "auto" (GPU when present, else CPU), "cpu", "cuda" or "cuda:N".
    device: str = "auto"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, Mapping) and "batch_size" in data:  # the pre-0.2 name
            if "rows_per_batch" in data:
                raise _err(
                    "both `batch_size` and `rows_per_batch` given",
                    "keep `rows_per_batch` only (`batch_size` is its deprecated name)",
                    field="embedder.batch_size",
                )
            warnings.warn(
                "manifest: embedder `batch_size` is deprecated; write `rows_per_batch`",
                FutureWarning,
                stacklevel=2,
            )
            data = {("rows_per_batch" if k == "batch_size" else k): v for k, v in data.items()}
        return data

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        if not _DEVICE_RE.match(v):
            raise _err(f"unknown device {v!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return v

    @model_validator(mode="after")
    def _check_params(self) -> EmbedderSpec:
        if self.kind in _MODEL_KINDS:
            if not self.path:
                raise _err(
                    f"embedder kind {self.kind!r} needs a model path",
                    "add `path: /local/path/to/model`",
                    field="embedder.path",
                )
            if "://" in self.path and not self.path.startswith("file://"):
                raise _err(
                    f"model path {self.path!r} is not local",
                    "copy the model to a local path on every worker",
                    field="embedder.path",
                )
        elif self.path is not None:
            raise _err(
                f"embedder kind {self.kind!r} takes no path",
                "remove `path` or use kind torchscript/torch/sentence-transformers",
                field="embedder.path",
            )
        if self.kind == "random-projection" and self.dim is None:
            raise _err(
                "random-projection needs an output dimension",
                "add `dim: 64` (say)",
                field="embedder.dim",
            )
        if self.kind == "identity" and self.dim is not None:
            raise _err(
                "embedder kind 'identity' takes no dim",
                "remove `dim` (it is the feature dimension)",
                field="embedder.dim",
            )
        return self

    @property
    def local_path(self) -> str | None:
        """The model path without a ``file://`` prefix."""
        if self.path is None:
            return None
        return self.path[len("file://") :] if self.path.startswith("file://") else self.path

    @property
    def id(self) -> str:
        """Stable id: kind, output-relevant params, model bytes hash and EMBEDDER_VERSION.

        Device and rows per batch are excluded: they do not change the embedding (beyond
        floating-point noise).  A changed model file gives a new id, hence a cache miss.
        """
        params: dict[str, Any] = {"kind": self.kind, "v": config.EMBEDDER_VERSION}
        if self.kind in ("random-projection", "pca"):
            params["dim"] = self.dim
        if self.kind == "random-projection":
            params["seed"] = self.seed
        if self.local_path is not None:
            lp = self.local_path
            if not os.path.exists(lp):
                raise InputError(
                    f"model path {lp!r} does not exist",
                    field="embedder.path",
                    fix="give the local path of the model file or directory",
                )
            params["sha256"] = _hash_path(lp)
        blob = json.dumps(params, sort_keys=True).encode()
        return f"{self.kind}-v{config.EMBEDDER_VERSION}-{hashlib.sha256(blob).hexdigest()[:16]}"
