"""A model embedder's output size from its local metadata, without loading weights
(preflight, issue 17: everything knowable before any data is read).

``sentence-transformers`` directories: ``modules.json`` lists the modules in order; the
size is followed through them from their JSON configs — ``Transformer`` (``config.json``
``hidden_size``/``d_model``), ``Pooling`` (``word_embedding_dimension`` times the number of
``pooling_mode_*`` flags set, or, from sentence-transformers 6, ``embedding_dimension``
times the number of ``pooling_mode`` names), ``Dense`` (``out_features``); ``Normalize``,
``LayerNorm`` and ``Dropout`` keep it. Any other module, a missing or malformed file:
unknown (None), never a guess.

``torchscript``/``torch`` files: unknown (None). Their shapes live in pickled or compiled
archives; reading them means unpickling (arbitrary code for ``torch``) or loading the
model, which preflight does not do. Only JSON is read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["ModelDim", "model_output_dim"]

#: sentence-transformers modules that keep the embedding size
_SAME_SIZE = {"Normalize", "LayerNorm", "Dropout"}
#: the boolean pooling flags of sentence-transformers < 6 (each adds one block of ``dim``)
_POOLING_FLAGS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


class ModelDim(NamedTuple):
    """The output size (None: unknown) and the metadata file it was read from."""

    dim: int | None
    source: str = ""


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _positive(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


def _pooling_dim(cfg: dict[str, Any]) -> int | None:
    if "embedding_dimension" in cfg:  # sentence-transformers >= 6
        base = _positive(cfg.get("embedding_dimension"))
        mode = cfg.get("pooling_mode", "mean")
        modes = [mode] if isinstance(mode, str) else mode
        if base is None or not isinstance(modes, list) or not modes:
            return None
        return base * len(modes)
    base = _positive(cfg.get("word_embedding_dimension"))
    n = sum(cfg.get(flag) is True for flag in _POOLING_FLAGS)
    return base * n if base is not None and n > 0 else None


def _module_dim(kind: str, cfg: Any) -> int | None:
    """The size after one module that sets it (None: not in its metadata)."""
    if not isinstance(cfg, dict):
        return None
    if kind == "Transformer":
        return _positive(cfg.get("hidden_size")) or _positive(cfg.get("d_model"))
    if kind == "Pooling":
        return _pooling_dim(cfg)
    if kind == "Dense":
        return _positive(cfg.get("out_features"))
    return None


def _sentence_transformers_dim(root: Path) -> ModelDim:
    modules = _json(root / "modules.json")
    if not isinstance(modules, list) or not modules:
        return ModelDim(None)
    dim: int | None = None
    source = ""
    for entry in sorted((m for m in modules if isinstance(m, dict)), key=lambda m: m.get("idx", 0)):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        if kind in _SAME_SIZE:
            continue
        sub = str(entry.get("path", ""))
        if Path(sub).is_absolute() or ".." in Path(sub).parts:
            return ModelDim(None)  # only files inside the model directory are read
        cfg_path = root / sub / "config.json"
        dim = _module_dim(kind, _json(cfg_path))
        if dim is None:
            return ModelDim(None)  # a module whose size is not in its metadata
        source = str(cfg_path)
    return ModelDim(dim, source)


def model_output_dim(kind: str, path: str | None) -> ModelDim:
    """The output size of a model embedder read from local metadata (``dim`` None when it
    is not knowable without loading the model); ``source``: the file that said it."""
    if kind != "sentence-transformers" or not path:
        return ModelDim(None)
    root = Path(path)
    if not root.is_dir():
        return ModelDim(None)
    return _sentence_transformers_dim(root)
