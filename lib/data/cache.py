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

Every entry is *verified on read*: it is stored as an envelope — the line
``otaudit-cache``, a one-line JSON header (entry schema ``config.CACHE_ENTRY_SCHEMA``, its
kind, its key, the payload's length and its checksum: ``sha256`` of the payload, or
``hmac-sha256`` keyed by the secret ``OTAUDIT_CACHE_SECRET`` when one is set) and the payload
(an ``.npz`` or UTF-8 JSON). A missing entry is a miss (``None``). A bad entry — truncated,
edited, renamed onto another key, of another schema, undecodable, nested too deeply, or
rejected by the caller's ``validate`` check (e.g. a pair result's range checks) — is logged
in one warning line, **deleted** and reported as a miss, so it is recomputed: it is never
trusted and never fails an audit.

What the checksum protects against: corruption, partial/truncated writes, entries copied
under another key and edits by anyone without the secret. It does not protect against a
writer who recomputes the checksum: without ``OTAUDIT_CACHE_SECRET`` the cache store must be
trusted like the report output itself; with it, a forger also needs the secret.

Arrays are stored without pickle (``allow_pickle=False``): object arrays of
strings (string labels) are stored as unicode arrays and come back as object arrays of
``str``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import zipfile
from collections.abc import Callable
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
#: First line of every entry (an envelope: this line, a JSON header line, the payload).
MAGIC = b"otaudit-cache\n"
_HEADER_MAX = 4096  # bytes: the header is a short flat JSON object

#: ``validate(value) -> None | reason``: a caller's check of a decoded entry.
Validator = Callable[[Any], "str | None"]


class BadEntry(Exception):
    """A cache entry that failed verification (internal: it becomes a miss)."""


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

    def __init__(self, store: Store, secret: str | None = None):
        """``secret`` keys the entries' HMAC (default: the ``OTAUDIT_CACHE_SECRET``
        setting; none: plain sha256 checksums)."""
        self.store = store
        self.root = store.child(CACHE_DIR)
        if secret is None:
            from ..config import load_settings

            s = load_settings().cache_secret
            secret = s.get_secret_value() if s is not None else None
        self._secret = secret.encode() if secret else None

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

    def exists(self, kind: str, key: str, ext: str = "npz") -> bool:
        """Whether an entry is present (not verified: a read verifies)."""
        return self.root.exists(*self._parts(kind, key, ext))

    def delete(self, kind: str, key: str, ext: str = "npz") -> None:
        """Remove an entry (absent is fine)."""
        self.root.rm(*self._parts(kind, key, ext))

    def _digest(self, kind: str, key: str, payload: bytes) -> str:
        if self._secret is None:
            return "sha256:" + hashlib.sha256(payload).hexdigest()
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in (kind.encode(), key.encode(), payload):
            mac.update(len(part).to_bytes(8, "little"))
            mac.update(part)
        return "hmac-sha256:" + mac.hexdigest()

    def _seal(self, parts: tuple[str, str], payload: bytes) -> bytes:
        kind, name = parts
        key = name.rpartition(".")[0]
        header = {
            "schema": config.CACHE_ENTRY_SCHEMA,
            "kind": kind,
            "key": key,
            "len": len(payload),
            "sum": self._digest(kind, key, payload),
        }
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload

    def _open(self, parts: tuple[str, str], data: bytes) -> bytes:
        """The verified payload of an entry; raises :class:`BadEntry` with the reason."""
        kind, name = parts
        key = name.rpartition(".")[0]
        if not data.startswith(MAGIC):
            raise BadEntry("not an otaudit cache entry (no envelope)")
        end = data.find(b"\n", len(MAGIC), len(MAGIC) + _HEADER_MAX)
        if end < 0:
            raise BadEntry("no header line")
        try:
            header = json.loads(data[len(MAGIC) : end].decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise BadEntry(f"unreadable header ({type(e).__name__})") from None
        if not isinstance(header, dict):
            raise BadEntry("header is not an object")
        if header.get("schema") != config.CACHE_ENTRY_SCHEMA:
            raise BadEntry(
                f"entry schema {header.get('schema')!r}, expected {config.CACHE_ENTRY_SCHEMA}"
            )
        if header.get("kind") != kind or header.get("key") != key:
            raise BadEntry("entry belongs to another kind/key")
        payload = data[end + 1 :]
        if header.get("len") != len(payload):
            raise BadEntry(f"payload has {len(payload)} bytes, header says {header.get('len')!r}")
        if not isinstance(header.get("sum"), str) or not hmac.compare_digest(
            header["sum"], self._digest(kind, key, payload)
        ):
            raise BadEntry("checksum mismatch (edited, corrupt or written with another secret)")
        return payload

    def _bad(self, parts: tuple[str, str], reason: str) -> None:
        """Log one line and delete the entry, so that it is recomputed and rewritten."""
        uri = self.root.path(*parts)
        log.warning(
            "cache entry %s rejected (%s); deleted, recomputing it",
            uri,
            " ".join(str(reason).split())[:160],
        )
        try:
            self.root.rm(*parts)
        except StorageError as e:  # the next put overwrites it anyway
            log.warning("could not delete cache entry %s: %s", uri, " ".join(str(e).split())[:120])

    def _read(self, parts: tuple[str, str], decode: Callable[[bytes], Any], validate: Any) -> Any:
        data = self._get(parts)
        if data is None:
            return None
        try:
            value = decode(self._open(parts, data))
            reason = validate(value) if validate is not None else None
        except BadEntry as e:
            reason = str(e)
        except (ValueError, OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
                UnicodeDecodeError, RecursionError) as e:  # fmt: skip
            reason = f"{type(e).__name__}: {e}"
        if reason is not None:
            self._bad(parts, reason)
            return None
        return value

    # --- arrays ------------------------------------------------------------------------
    def get_arrays(
        self, kind: str, key: str, validate: Validator | None = None
    ) -> dict[str, np.ndarray] | None:
        """The arrays stored under (kind, key), or None (absent, or bad: then deleted).

        ``validate(arrays)`` may return a reason to reject the (verified) entry."""
        return self._read(self._parts(kind, key, "npz"), _decode_npz, validate)

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
        self.root.write_bytes(self._seal(parts, buf.getvalue()), *parts)
        return self.root.path(*parts)

    # --- json --------------------------------------------------------------------------
    def get_json(self, kind: str, key: str, validate: Validator | None = None) -> Any | None:
        """The JSON value stored under (kind, key), or None (absent, or bad: then deleted).

        ``validate(value)`` may return a reason to reject the (verified) entry."""
        return self._read(self._parts(kind, key, "json"), _decode_json, validate)

    def put_json(self, kind: str, key: str, value: Any) -> str:
        """Store a JSON-able value atomically; returns the entry's URI."""
        parts = self._parts(kind, key, "json")
        payload = json.dumps(value, sort_keys=True, allow_nan=True).encode("utf-8")
        self.root.write_bytes(self._seal(parts, payload), *parts)
        return self.root.path(*parts)


def _decode_npz(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    return {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in out.items()}


def _decode_json(payload: bytes) -> Any:
    return json.loads(payload.decode("utf-8"))
