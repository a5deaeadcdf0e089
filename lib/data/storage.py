"""Object storage: the ONLY module of otaudit that imports fsspec.

A :class:`Store` is a prefix (local directory, ``file://``, ``s3://``, ``gs://``, ``az://``,
``memory://``) that every other module reads and writes *below*, never above:
parts containing ``..``, absolute paths, backslashes or URL schemes are rejected
(:class:`~otaudit.errors.InputError`).

Writes are atomic: data goes to a temporary key next to the final one, then is moved in
place (on S3 a move is copy + delete, so a reader sees the old object or the whole new one,
never a partial one).  A directory of files (a report) is published with
:meth:`Store.publish_dir`: all files are staged under a temporary prefix, moved in place,
and the ``_SUCCESS`` marker is written LAST; readers treat a prefix without ``_SUCCESS``
as absent (:meth:`Store.is_published`).

Errors are :class:`~otaudit.errors.StorageError` one-liners with the URI (credentials
masked) and a fix.  Local files are created with the process umask (nothing world-writable
with the usual 022).

Deviations from pipeline_api.md: none in names/signatures.  Additions: ``write_bytes``
also accepts an iterable of byte chunks; ``open(..., mode="wb")`` returns an atomic writer
(commit on close, discard on exception); ``is_published``, ``list_published``,
``protocol``, ``is_local``; ``publish_dir`` refuses to overwrite a published prefix;
``isdir``, ``find`` (recursive listing relative to the prefix), ``refresh`` (forget cached
listings) — what the readers need, so that no other module touches ``store.fs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, Any

import fsspec

from ..errors import InputError, StorageError
from .secrets import redact

__all__ = ["Store", "check_reachable", "SUCCESS", "storage_errors"]

log = logging.getLogger(__name__)

#: Marker written last by :meth:`Store.publish_dir`.
SUCCESS = "_SUCCESS"
_TMP_PREFIX = ".tmp-"


def _error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError, TimeoutError]
    try:  # botocore is only there with s3fs; its errors are not OSErrors
        from botocore.exceptions import BotoCoreError, ClientError

        types += [BotoCoreError, ClientError]
    except ImportError:  # pragma: no cover - s3fs not installed
        pass
    return tuple(types)


_ERRORS = _error_types()
#: Top-level modules of the gcsfs/adlfs stacks, whose errors (gcsfs ``HttpError``, azure's
#: ``HttpResponseError``, ...) are not OSErrors; matched by module so that importing this
#: module does not import those (slow) packages.
_BACKEND_ERROR_MODULES = ("gcsfs", "adlfs", "azure", "google")


def _is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an I/O failure of a storage backend (turned into a StorageError)."""
    if isinstance(exc, _ERRORS):
        return True
    return any(
        type(c).__module__.split(".")[0] in _BACKEND_ERROR_MODULES
        for c in (exc, exc.__cause__)
        if c is not None
    )


def _fix_for(protocol: str, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "check the path/URI (and the bucket name) and that the writer finished"
    if isinstance(exc, PermissionError):
        return "check the credentials and their permissions on this prefix"
    if protocol in ("s3", "s3a"):
        return (
            "check storage_options.client_kwargs.endpoint_url, the network, and the "
            "credentials (storage_options key/secret or AWS_* environment)"
        )
    if protocol in ("gs", "gcs"):
        return (
            "check the network, storage_options.token (a service-account JSON file, "
            "'google_default', or 'anon' for an emulator) and endpoint_url if not Google's"
        )
    if protocol in ("az", "abfs", "abfss"):
        return (
            "check the container name and storage_options: account_name with account_key, "
            "sas_token or credential, or a connection_string (or AZURE_STORAGE_* environment)"
        )
    return "check that the path exists and is readable/writable"


#: URI scheme -> (fsspec backend package, otaudit extra that installs it).
_BACKENDS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}


def _backend_hint(scheme: str, exc: BaseException) -> str:
    """The fix for a URI that fsspec cannot open: the extra to install for a missing backend,
    else what to check."""
    backend = _BACKENDS.get(scheme.lower())
    if isinstance(exc, ImportError) and backend:
        return f"pip install 'otaudit[{backend[1]}]' ({backend[0]} is the {scheme}:// backend)"
    if isinstance(exc, ImportError):
        return f"install the fsspec backend of {scheme}:// (see fsspec's list of implementations)"
    return "check the URI scheme and the storage_options (key names of the fsspec backend)"


def _url_to_fs(uri: str, options: dict[str, Any]) -> tuple[Any, str]:
    """``fsspec.core.url_to_fs``, except for GCS at a custom ``endpoint_url`` (an emulator,
    a private endpoint): gcsfs >= 2025.10 registers ``ExtendedGcsFileSystem``, whose bucket
    type probe (Google's Storage Control gRPC API) times out after 60 s on anything but
    Google, uncached, before every open. There the plain ``gcsfs.core.GCSFileSystem`` (the
    JSON API only) is used; ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` does the same for
    every gcsfs user of the process."""
    scheme = uri.split("://")[0].lower() if "://" in uri else "file"
    endpoint = str(options.get("endpoint_url") or "")
    if scheme in ("gs", "gcs") and endpoint and "googleapis.com" not in endpoint:
        from gcsfs.core import GCSFileSystem

        root = GCSFileSystem._strip_protocol(uri)
        return GCSFileSystem(**options), root
    return fsspec.core.url_to_fs(uri, **options)


@contextlib.contextmanager
def storage_errors(uri: str, action: str, protocol: str = "file") -> Iterator[None]:
    """Turn I/O failures inside the block into a one-line :class:`StorageError`."""
    try:
        yield
    except (StorageError, InputError):
        raise
    except KeyError as e:  # s3fs: a reply without a field it needs (HEAD w/o Content-Length)
        raise StorageError(
            f"storage {redact(uri)!r} {action} failed: the store's reply has no {e} field; "
            "fix: check proxies between otaudit and the store (they must keep Content-Length)"
        ) from e
    except Exception as e:
        if not _is_storage_error(e):
            raise
        what = (
            "not found"
            if isinstance(e, FileNotFoundError)
            else (f"{action} failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        )
        raise StorageError(f"storage {redact(uri)!r} {what}; fix: {_fix_for(protocol, e)}") from e


def _check_parts(parts: tuple[str, ...]) -> list[str]:
    """Validate key parts; returns the flat list of path segments."""
    segs: list[str] = []
    for p in parts:
        if not isinstance(p, str):
            raise InputError(
                f"storage key part {p!r} is not a string",
                field="path",
                fix="pass key parts as strings",
            )
        if p == "":
            continue
        bad = None
        if "\\" in p:
            bad = "contains a backslash"
        elif p.startswith("/") or p.startswith("~"):
            bad = "is absolute"
        elif "://" in p:
            bad = "contains a URL scheme"
        elif len(p) > 1 and p[1] == ":" and p[0].isalpha():
            bad = "is a drive path"
        for s in p.split("/"):
            if s in ("..", "."):
                bad = "contains '..' or '.'"
        if bad:
            raise InputError(
                f"storage key part {p!r} {bad}",
                field="path",
                fix="use relative names below the store's prefix",
            )
        segs.extend(s for s in p.split("/") if s)
    return segs


def _fsync_dir(path: str) -> None:
    """fsync a local directory (its entries: renames/creations) where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


class _AtomicFile:
    """A write-only file that becomes visible at its final key only on successful close."""

    def __init__(self, store: Store, parts: tuple[str, ...]):
        self._store = store
        self._final = store._key(*parts)
        self._tmp = store._tmp_key(self._final)
        store._makedirs_parent(self._final)
        with storage_errors(store._uri_of(self._final), "write", store.protocol):
            self._f: IO[bytes] = store.fs.open(self._tmp, "wb")
        self._done = False

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:  # tell, flush, ... for pyarrow writers
        return getattr(self._f, name)

    def close(self) -> None:
        """Commit: close the temporary object and move it to the final key."""
        if self._done:
            return
        self._done = True
        uri = self._store._uri_of(self._final)
        try:
            with storage_errors(uri, "write", self._store.protocol):
                if self._store.is_local:  # durable before it becomes visible
                    self._f.flush()
                    os.fsync(self._f.fileno())
                self._f.close()
                tmp, final, fs = self._tmp, self._final, self._store.fs
                self._store._headless(tmp, lambda: fs.mv(tmp, final))
                if self._store.is_local:
                    _fsync_dir(self._final.rpartition("/")[0])
        except BaseException:
            self._store._discard(self._tmp)
            raise

    def abort(self) -> None:
        """Discard everything written (the final key is untouched)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(*_ERRORS):
            self._f.close()
        self._store._discard(self._tmp)

    @property
    def closed(self) -> bool:
        return self._done

    def __enter__(self) -> _AtomicFile:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class Store:
    """A confined prefix in an fsspec filesystem.

    Parameters
    ----------
    uri:
        Local path, ``file://``, ``s3://bucket/prefix``, ``gs://``, ``az://``, ``memory://``.
    storage_options:
        Passed to fsspec (e.g. ``{"client_kwargs": {"endpoint_url": ...}, "key": ...,
        "secret": ...}``); credentials may instead come from the environment.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        if not isinstance(uri, str) or not uri.strip():
            raise InputError(
                "empty storage URI", field="uri", fix="give a local path or an fsspec URI"
            )
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        scheme = uri.split("://")[0] if "://" in uri else "file"
        with storage_errors(uri, "open", scheme):
            try:
                fs, root = _url_to_fs(uri, self.storage_options)
            except (ValueError, ImportError, TypeError) as e:
                raise StorageError(
                    f"storage {redact(uri)!r} cannot be opened: {type(e).__name__}: "
                    f"{' '.join(str(e).split())[:200]}; fix: {_backend_hint(scheme, e)}"
                ) from e
        self.fs = fs
        self.root: str = root.rstrip("/") if root not in ("/", "") else root
        protos = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
        self.protocol: str = "file" if "file" in protos or "local" in protos else protos[0]
        self.uri: str = self._uri_of(self.root)

    # --- construction / naming ---------------------------------------------------------
    @property
    def is_local(self) -> bool:
        """True for the local filesystem."""
        return self.protocol == "file"

    def _uri_of(self, key: str) -> str:
        if self.is_local:
            return key
        if self.protocol == "memory":
            return "memory://" + key.lstrip("/")
        return f"{self.protocol}://{key}"

    def _key(self, *parts: str) -> str:
        segs = _check_parts(parts)
        if not segs:
            return self.root
        base = self.root.rstrip("/")
        return base + "/" + "/".join(segs) if base else "/".join(segs)

    def _tmp_key(self, final: str) -> str:
        parent, _, leaf = final.rpartition("/")
        return f"{parent}/{_TMP_PREFIX}{uuid.uuid4().hex[:12]}-{leaf}"

    def _makedirs_parent(self, key: str) -> None:
        if self.is_local:
            parent = key.rpartition("/")[0]
            with storage_errors(self._uri_of(parent), "mkdir", self.protocol):
                self.fs.makedirs(parent, exist_ok=True)

    def _discard(self, key: str) -> None:
        try:
            if self._exists(key):
                self._headless(key, lambda: self.fs.rm(key, recursive=True))
        except (
            *_ERRORS,
            KeyError,
            StorageError,
        ) as e:  # the temp key is invisible to readers; say it stayed
            log.warning(
                "could not remove temporary %s: %s", redact(self._uri_of(key)), type(e).__name__
            )

    def child(self, *parts: str) -> Store:
        """The sub-store ``<uri>/<parts...>`` (same filesystem; confined)."""
        new = object.__new__(Store)
        new.storage_options = self.storage_options
        new.fs = self.fs
        new.protocol = self.protocol
        new.root = self._key(*parts)
        new.uri = new._uri_of(new.root)
        return new

    def path(self, *parts: str) -> str:
        """The full URI of ``parts`` (local: an absolute path)."""
        return self._uri_of(self._key(*parts))

    def __repr__(self) -> str:
        return f"Store({redact(self.uri)!r})"

    def __reduce__(self):  # pickle by URI + options (fsspec instances are cached per options)
        return (_restore_store, (self.protocol, self.root, self.storage_options))

    # --- reading -----------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        """Whether the key (file or prefix) exists."""
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "exists", self.protocol):
            return self._exists(key)

    def _exists(self, key: str) -> bool:
        try:
            return bool(self.fs.exists(key))
        except KeyError:  # s3fs: a HEAD answered without Content-Length: the object is there
            return True

    def ls(self, *parts: str) -> list[str]:
        """Sorted names (not paths) directly below ``parts``; [] when absent.

        Temporary keys of in-flight writes are not listed.
        """
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "list", self.protocol):
            if not self.is_local:
                self.fs.invalidate_cache(key)  # see writes by other processes
            try:
                entries = self.fs.ls(key, detail=False)
            except FileNotFoundError:
                return []
        names = {e.rstrip("/").rpartition("/")[2] for e in entries}
        names.discard("")
        return sorted(n for n in names if not n.startswith(_TMP_PREFIX))

    def isdir(self, *parts: str) -> bool:
        """Whether the key is a directory (prefix); False when absent."""
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "stat", self.protocol):
            try:
                return bool(self.fs.isdir(key))
            except FileNotFoundError:
                return False

    def find(self, *parts: str) -> dict[str, dict[str, Any]]:
        """Every file below ``parts``, recursively: path relative to ``parts`` -> fsspec info
        (sorted; temporary keys of in-flight writes are left out)."""
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "list", self.protocol):
            found = self.fs.find(key, detail=True)
        base = key.rstrip("/")
        out = {}
        for k, v in sorted(found.items()):
            if v.get("type", "file") != "file":
                continue
            rel = k[len(base) :].lstrip("/") if k.startswith(base) else k
            if not any(p.startswith(_TMP_PREFIX) for p in rel.split("/")):
                out[rel] = dict(v)
        return out

    def refresh(self, *parts: str) -> None:
        """Forget cached listings below ``parts`` (object stores), so that files written by
        other processes are seen; a no-op on the local filesystem."""
        if not self.is_local:
            self.fs.invalidate_cache(self._key(*parts))

    def __eq__(self, other: object) -> bool:  # same filesystem instance and prefix
        return isinstance(other, Store) and (self.fs is other.fs and self.root == other.root)

    def __hash__(self) -> int:  # memoised readers key on the store (fsspec caches instances)
        return hash((id(self.fs), self.root))

    def info(self, *parts: str) -> dict[str, Any]:
        """fsspec ``info`` (size, mtime/etag, ...)."""
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "stat", self.protocol):
            try:
                return dict(self.fs.info(key))
            except KeyError as e:  # s3fs: HEAD without Content-Length; the listing has sizes
                return self._info_from_listing(key, e)

    def _headless(self, key: str, call: Any) -> Any:
        """``call()``; when s3fs raises ``KeyError`` (a HEAD reply without Content-Length:
        s3fs >= 2025 sizes every ``cat_file`` and ``open`` with a HEAD), the parent's
        listing is read once (it has the sizes, and fills s3fs's listing cache, which its
        ``info`` then answers from) and ``call()`` is retried."""
        try:
            return call()
        except KeyError as e:
            self._info_from_listing(key, e)
            return call()

    def _info_from_listing(self, key: str, error: KeyError) -> dict[str, Any]:
        parent = key.rstrip("/").rpartition("/")[0]
        for entry in self.fs.ls(parent, detail=True, refresh=True):
            if entry.get("name", "").rstrip("/") == key.rstrip("/") and "size" in entry:
                return dict(entry)
        raise StorageError(
            f"storage {redact(self._uri_of(key))!r}: the store's answer has no "
            f"{error.args[0] if error.args else 'size'!s} field; fix: check proxies between "
            "otaudit and the store (a HEAD reply needs Content-Length)"
        )

    def read_bytes(self, *parts: str) -> bytes:
        """The whole object."""
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "read", self.protocol):
            return bytes(self._headless(key, lambda: self.fs.cat_file(key)))

    def open(self, *parts: str, mode: str = "rb") -> Any:
        """Open for reading (``rb``/``r``), or an atomic writer for ``wb``."""
        if mode in ("wb", "w+b"):
            return _AtomicFile(self, parts)
        if mode not in ("rb", "r"):
            raise InputError(
                f"unsupported mode {mode!r}",
                field="mode",
                fix="use 'rb' to read or 'wb' for an atomic write",
            )
        key = self._key(*parts)
        with storage_errors(self._uri_of(key), "open", self.protocol):
            return self._headless(key, lambda: self.fs.open(key, mode))

    # --- writing -----------------------------------------------------------------------
    def write_bytes(
        self, data: bytes | bytearray | memoryview | Iterable[bytes], *parts: str
    ) -> None:
        """Atomically write ``data`` (bytes or an iterable of chunks) to ``parts``.

        If producing the chunks fails, the temporary key is removed and the final key is
        left as it was.
        """
        with self.open(*parts, mode="wb") as f:
            if isinstance(data, bytes | bytearray | memoryview):
                f.write(bytes(data))
            else:
                for chunk in data:
                    f.write(chunk)

    def rm(self, *parts: str, recursive: bool = False) -> None:
        """Remove a key (a prefix with ``recursive=True``); absent keys are fine."""
        key = self._key(*parts)
        if key == self.root and not parts:
            raise InputError(
                "refusing to remove the store's own root",
                field="path",
                fix="name a key below the store",
            )
        with storage_errors(self._uri_of(key), "remove", self.protocol):
            if self._exists(key):
                self._headless(key, lambda: self.fs.rm(key, recursive=recursive))

    def publish_dir(self, local_or_staged_files: dict[str, bytes], *parts: str) -> str:
        """Publish a set of files under ``parts`` atomically; returns the prefix URI.

        Files are staged under a temporary sibling prefix, moved in place, then
        ``_SUCCESS`` (a JSON manifest: ``{"files": {name: {"size", "sha256"}},
        "published_at"}``) is written last, so a reader can prove every file complete.  On a
        local filesystem every file and directory is fsync'd before the marker.  On failure
        the staged and moved files are removed and no ``_SUCCESS`` exists.
        """
        files = dict(local_or_staged_files)
        if not files:
            raise InputError("nothing to publish", field="files", fix="pass at least one file")
        for name in files:
            _check_parts((name,))
            if name.rpartition("/")[2] == SUCCESS:
                raise InputError(
                    f"file name {SUCCESS} is reserved", field="files", fix="rename the file"
                )
        final = self._key(*parts)
        if final == self.root:
            raise InputError(
                "publish_dir needs a prefix below the store",
                field="path",
                fix="pass the report's sub-path, e.g. ('audit', 'run=1')",
            )
        final_uri = self._uri_of(final)
        if self.is_published(*parts):
            raise StorageError(
                f"storage {redact(final_uri)!r} is already published; "
                "fix: use a new run id (published runs are immutable)"
            )
        staging = self._tmp_key(final)
        moved: list[str] = []
        try:
            with storage_errors(final_uri, "publish", self.protocol):
                for name, data in files.items():
                    key = f"{staging}/{name}"
                    if self.is_local:
                        self.fs.makedirs(key.rpartition("/")[0], exist_ok=True)
                    with self.fs.open(key, "wb") as f:
                        f.write(bytes(data))
                        if self.is_local:
                            f.flush()
                            os.fsync(f.fileno())
                for name in files:
                    dst = f"{final}/{name}"
                    if self.is_local:
                        self.fs.makedirs(dst.rpartition("/")[0], exist_ok=True)
                    src = f"{staging}/{name}"
                    self._headless(src, lambda src=src, dst=dst: self.fs.mv(src, dst))
                    moved.append(dst)
                if self.is_local:  # the moves are durable before the marker exists
                    for d in sorted({k.rpartition("/")[0] for k in moved}):
                        _fsync_dir(d)
            marker = json.dumps(
                {
                    "files": {
                        n: {"size": len(d), "sha256": hashlib.sha256(bytes(d)).hexdigest()}
                        for n, d in files.items()
                    },
                    "published_at": time.time(),
                },
                sort_keys=True,
            ).encode()
            self.write_bytes(marker, *parts, SUCCESS)
        except BaseException:
            for key in moved:
                self._discard(key)
            self._discard(staging)
            raise
        self._discard(staging)
        return final_uri

    def is_published(self, *parts: str) -> bool:
        """Whether ``parts`` is a complete published prefix (has ``_SUCCESS``)."""
        return self.exists(*parts, SUCCESS)

    def list_published(self, *parts: str) -> list[str]:
        """Names below ``parts`` that are published prefixes (incomplete ones ignored)."""
        return [n for n in self.ls(*parts) if self.is_published(*parts, n)]


def _restore_store(protocol: str, root: str, storage_options: dict[str, Any]) -> Store:
    if protocol == "file":
        return Store(root or "/", storage_options)
    if protocol == "memory":
        return Store("memory://" + root.lstrip("/"), storage_options)
    return Store(f"{protocol}://{root}", storage_options)


_PROBE_CONNECT_TIMEOUT = 5
_PROBE_READ_TIMEOUT = 10


def check_reachable(store: Store) -> None:
    """Raise a one-line :class:`StorageError` unless the store's location answers.

    Local: the nearest existing ancestor must be a writable directory (the store is created
    on first write).  Object stores: the bucket/container is listed once.  For S3 the probe
    uses bounded timeouts (connect 5 s, read 10 s, 2 attempts, no s3fs retry loop) unless
    ``storage_options.config_kwargs`` sets its own, so a wrong endpoint fails in seconds.
    """
    uri = store.uri
    if store.protocol == "memory":
        return
    if store.is_local:
        probe = store.root
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe.rstrip("/")) or "/"
        if not os.path.isdir(probe):
            raise StorageError(
                f"storage {redact(uri)!r} unreachable: {probe!r} is not a directory; "
                "fix: choose a directory path for the output"
            )
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StorageError(
                f"storage {redact(uri)!r} is not writable ({probe!r}); fix: choose a "
                "writable directory or fix its permissions"
            )
        return
    bucket = store.root.split("/")[0]
    fs = store.fs
    try:
        if store.protocol in ("s3", "s3a"):
            opts = dict(store.storage_options)
            ck = dict(opts.get("config_kwargs") or {})
            ck.setdefault("connect_timeout", _PROBE_CONNECT_TIMEOUT)
            ck.setdefault("read_timeout", _PROBE_READ_TIMEOUT)
            ck.setdefault("retries", {"max_attempts": 2})
            opts["config_kwargs"] = ck
            fs = fsspec.filesystem(store.protocol, skip_instance_cache=True, **opts)
            fs.retries = 1  # s3fs's own retry loop runs on top of botocore's
        fs.ls(bucket, detail=False)
    except FileNotFoundError as e:
        raise StorageError(
            f"storage {redact(uri)!r} unreachable: bucket {bucket!r} does not "
            "exist; fix: create the bucket or correct the URI"
        ) from e
    except (TypeError, ValueError) as e:  # an unknown storage_options key surfaces here
        if _is_storage_error(e):
            _raise_unreachable(store, e)
        raise StorageError(
            f"storage {redact(uri)!r} rejected its storage_options: "
            f"{' '.join(str(e).split())[:200]}; fix: remove or correct that key "
            "(see the fsspec backend's documentation)"
        ) from e
    except Exception as e:  # OSErrors, botocore's, gcsfs's and azure's own error types
        if not _is_storage_error(e):
            raise
        _raise_unreachable(store, e)


def _raise_unreachable(store: Store, e: BaseException) -> None:
    raise StorageError(
        f"storage {redact(store.uri)!r} unreachable: {type(e).__name__}: "
        f"{' '.join(str(e).split())[:200]}; fix: {_fix_for(store.protocol, e)}"
    ) from e
