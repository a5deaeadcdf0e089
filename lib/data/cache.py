"""Content-addressed cache of embeddings and per-dataset statistics.

Entries live under ``<output>/_cache/<kind>/<key>.npz`` (arrays) or ``.json``, written
atomically through :class:`~otaudit.data.storage.Store`.  Keys are sha256 digests of the
caller's parts (dataset fingerprint, embedder id, ...) and the cache layout version
(``config.CACHE_VERSION``), so a scheduled re-run recomputes only what changed.

The cache can never serve numbers from older code: the key policy below
(:func:`embedding_key`, :func:`stats_key`, :func:`pair_key`) adds the
:func:`code_fingerprint` of what determines each object — the sha256 of the source of the
modules that compute it (read once per process) and the current values of the config
sections it depends on (:data:`CODE_OF`). Edit a numeric module or change a constant and
the next audit recomputes.

A missing entry is a miss (``None``).  A corrupt entry (truncated, not an .npz, bad JSON)
is also a miss: a warning is logged and the next ``put`` overwrites it; it never fails an
audit.  Arrays are stored without pickle (``allow_pickle=False``): object arrays of
strings (string labels) are stored as unicode arrays and come back as object arrays of
``str``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .. import config
from ..errors import InputError, StorageError
from .storage import Store

__all__ = [
    "Cache",
    "CACHE_DIR",
    "CODE_OF",
    "code_fingerprint",
    "embedding_key",
    "stats_key",
    "pair_key",
]

log = logging.getLogger(__name__)

CACHE_DIR = "_cache"
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_RE = re.compile(r"^[0-9a-f]{16,128}$")


#: The package's source root (``lib/``): fingerprints read files below it, import nothing.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]

#: What determines each kind of cached object: source files or folders (relative to the
#: package) and the config sections (``config.NUMERICS`` ...) whose values it depends on.
CODE_OF: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "emb": (
        ("data/readers.py", "data/formats.py", "data/embedders.py", "data/embedding.py"),
        ("DATA",),
    ),
    "stats": (
        ("dataset_distance/stats.py", "dataset_distance/labels.py", "core"),
        ("NUMERICS",),
    ),
    "pair": (("core", "dataset_distance", "audit/measures.py"), ("NUMERICS",)),
}


@cache
def _source_digest(paths: tuple[str, ...]) -> str:
    """sha256 over the (relative path, bytes) of every ``.py`` file of ``paths`` — once per
    process and set of paths."""
    files: list[Path] = []
    for rel in paths:
        p = _PACKAGE_DIR / rel
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    h = hashlib.sha256()
    for f in files:
        if "__pycache__" in f.parts:
            continue
        data = f.read_bytes()
        for part in (f.relative_to(_PACKAGE_DIR).as_posix().encode(), data):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def code_fingerprint(kind: str) -> str:
    """The fingerprint of the code and config that determine a cached ``kind`` (a key of
    :data:`CODE_OF`): source digest (memoised) + the config sections' current values."""
    paths, sections = CODE_OF[kind]
    values = json.dumps(config.section_values(*sections), sort_keys=True, default=repr)
    return hashlib.sha256(f"{_source_digest(paths)}|{values}".encode()).hexdigest()


def embedding_key(cache: Cache, fingerprint: str, embedder_id: str) -> str:
    """Key of a dataset's embeddings: its content fingerprint, the embedder id (model bytes
    included), the reading/embedding code."""
    return cache.key("emb", fingerprint, embedder_id, code_fingerprint("emb"))


def stats_key(cache: Cache, emb_key: str, inner: str, self_tables: bool) -> str:
    """Key of a dataset's statistics: its embeddings, the label costs prepared, the code."""
    return cache.key("stats", emb_key, inner, str(self_tables), code_fingerprint("stats"))


def pair_key(cache: Cache, measure: str, params: dict[str, Any], emb_a: str, emb_b: str) -> str:
    """Key of one pair's result: the measure, its manifest parameters, both embeddings and
    the code of the measures."""
    return cache.key(
        "pair",
        measure,
        json.dumps(params, sort_keys=True),
        emb_a,
        emb_b,
        code_fingerprint("pair"),
    )


class Cache:
    """The cache below ``store`` (the audit's output store): ``<store>/_cache/...``."""

    def __init__(self, store: Store):
        self.store = store
        self.root = store.child(CACHE_DIR)

    # --- keys ---------------------------------------------------------------------------
    def key(self, kind: str, *parts: str) -> str:
        """sha256 of (kind, cache layout version, parts) as hex."""
        self._check_kind(kind)
        h = hashlib.sha256()
        for p in (kind, str(config.CACHE_VERSION), *map(str, parts)):
            h.update(len(p.encode()).to_bytes(8, "little"))
            h.update(p.encode())
        return h.hexdigest()

    @staticmethod
    def _check_kind(kind: str) -> None:
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise InputError(
                f"cache kind {kind!r} is not a safe name",
                field="kind",
                fix="use letters, digits, _ . -",
            )

    def _parts(self, kind: str, key: str, ext: str) -> tuple[str, str]:
        self._check_kind(kind)
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise InputError(
                f"cache key {key!r} is not a hex digest",
                field="key",
                fix="build keys with Cache.key(...)",
            )
        return kind, f"{key}.{ext}"

    def uri(self, kind: str, key: str, ext: str = "npz") -> str:
        """Where the entry lives."""
        return self.root.path(*self._parts(kind, key, ext))

    # --- raw ---------------------------------------------------------------------------
    def _get(self, parts: tuple[str, str]) -> bytes | None:
        try:
            return self.root.read_bytes(*parts)
        except StorageError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None
            raise

    def _corrupt(self, uri: str, e: BaseException) -> None:
        log.warning(
            "cache entry %s is corrupt (%s: %s); recomputing and overwriting it",
            uri,
            type(e).__name__,
            " ".join(str(e).split())[:120],
        )

    # --- arrays ------------------------------------------------------------------------
    def get_arrays(self, kind: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under (kind, key), or None (absent or corrupt)."""
        parts = self._parts(kind, key, "npz")
        data = self._get(parts)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            self._corrupt(self.root.path(*parts), e)
            return None
        return {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in out.items()}

    def put_arrays(self, kind: str, key: str, arrays: dict[str, Any]) -> str:
        """Store ``arrays`` (name -> array) atomically; returns the entry's URI."""
        parts = self._parts(kind, key, "npz")
        clean: dict[str, np.ndarray] = {}
        for name, a in arrays.items():
            arr = np.asarray(a)
            if arr.dtype == object:
                if not all(isinstance(v, str) for v in arr.ravel().tolist()):
                    raise InputError(
                        f"cache array {name!r} holds Python objects",
                        field=name,
                        fix="cache numeric arrays or arrays of strings",
                    )
                arr = arr.astype(str)
            clean[name] = arr
        buf = io.BytesIO()
        np.savez(buf, **clean)
        self.root.write_bytes(buf.getvalue(), *parts)
        return self.root.path(*parts)

    # --- json --------------------------------------------------------------------------
    def get_json(self, kind: str, key: str) -> Any | None:
        """The JSON value stored under (kind, key), or None (absent or corrupt)."""
        parts = self._parts(kind, key, "json")
        data = self._get(parts)
        if data is None:
            return None
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            self._corrupt(self.root.path(*parts), e)
            return None

    def put_json(self, kind: str, key: str, value: Any) -> str:
        """Store a JSON-able value atomically; returns the entry's URI."""
        parts = self._parts(kind, key, "json")
        self.root.write_bytes(json.dumps(value, sort_keys=True).encode("utf-8"), *parts)
        return self.root.path(*parts)
