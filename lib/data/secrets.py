"""Masking credentials: the one place that knows what a secret looks like.

Everything otaudit writes out or prints (reports, logs, ``repr`` of manifests and stores,
error messages with a URI) goes through :func:`redact`. Imported by the manifest and the
storage layer alike (it imports nothing of otaudit, so neither depends on the other).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "redact",
    "redact_uri",
    "MASK",
    "is_secret_key",
    "protocol_of",
    "scoped_options",
    "is_protocol_keyed",
]

#: Mapping keys whose values are masked (``storage_options`` keys of fsspec backends).
SECRET_KEY_RE = re.compile(
    r"(key|secret|token|password|passwd|credential|sas|signature|"
    r"connection_string|session)",
    re.IGNORECASE,
)
#: ``scheme://user:password@host`` — the userinfo part of a URI.
URI_USERINFO_RE = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^/@\s'\"]+)@")
MASK = "***"
#: Query-string parameters that carry credentials (pre-signed S3 URLs, Azure SAS tokens,
#: GCS signed URLs, OAuth codes); their values are masked by :func:`redact_uri`.
SECRET_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
        "X-Goog-Credential",
        "X-Goog-Signature",
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "se",
        "sv",
        "st",
        "sp",
        "spr",
        "srt",
        "ss",
        "skoid",
        "sktid",
        "skt",
        "ske",
        "sks",
        "skv",
        "token",
        "code",
        "key",
        "access_token",
        "api_key",
        "apikey",
        "password",
        "secret",
        "GoogleAccessId",
        "Expires",
    )
)
#: ``?a=1&b=2`` / ``;a=1`` query parts inside any text (a URI may sit inside a message).
_QUERY_RE = re.compile(r"([?&;])([A-Za-z0-9_.%-]+)=([^&;#\s'\"<>]*)")
#: Protocol aliases (one backend, several spellings) for scoping storage options.
_PROTOCOL_ALIASES = {
    "s3a": "s3",
    "s3n": "s3",
    "gcs": "gs",
    "abfs": "az",
    "abfss": "az",
    "adl": "az",
    "local": "file",
}


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a credential (its value is masked)."""
    return isinstance(key, str) and SECRET_KEY_RE.search(key) is not None


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (dicts/lists/strings) with secret-looking values masked.

    Keys matching key/secret/token/password/credential/... get ``"***"``; user:password
    parts of URIs are masked too.  Used for everything written out (reports, logs, repr).
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if is_secret_key(k) and not isinstance(v, Mapping | list):
                out[k] = MASK if v is not None else None
            else:
                out[k] = redact(v)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return redact_uri(obj)
    return obj


def _mask_query(m: re.Match[str]) -> str:
    sep, key, value = m.group(1), m.group(2), m.group(3)
    if key.lower() in SECRET_QUERY_KEYS or is_secret_key(key):
        value = MASK if value else value
    return f"{sep}{key}={value}"


def redact_uri(text: Any) -> Any:
    """``text`` (a URI, or any message containing URIs) with credentials masked: the
    ``user:password@`` part and credential query parameters (``X-Amz-Credential``,
    ``X-Amz-Signature``, ``sig``, ``se``, ``sv``, ``token``, ``AWSAccessKeyId``,
    ``Signature``, ``code`` ... and any parameter whose name looks like a secret).

    Idempotent; non-strings (``None``) are returned as they are. Every writer of a URI
    (report tables, summary, logs, errors) calls this.
    """
    if not isinstance(text, str):
        return text
    out = URI_USERINFO_RE.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    if "=" in out and ("?" in out or "&" in out or ";" in out):
        out = _QUERY_RE.sub(_mask_query, out)
    return out


def protocol_of(uri: str) -> str:
    """The storage backend of ``uri``: ``s3``, ``gs``, ``az``, ``memory``, ... or ``file``
    for a local path (aliases folded: ``s3a`` -> ``s3``, ``gcs`` -> ``gs``, ``abfs`` -> ``az``)."""
    if "://" not in uri:
        return "file"
    proto = uri.split("://", 1)[0].lower()
    proto = proto.split("::")[-1]  # chained URLs: the outermost target
    return _PROTOCOL_ALIASES.get(proto, proto)


def scoped_options(
    manifest_options: Mapping[str, Any] | None,
    uri: str,
    own: Mapping[str, Any] | None = None,
    home: str | None = None,
) -> dict[str, Any]:
    """The storage options that go to ``uri``: the manifest-level options only when they
    belong to ``uri``'s backend, overridden (shallow) by ``own`` (a dataset's options).

    Manifest-level options are either keyed by protocol (``{s3: {...}, gs: {...}}``: each
    backend gets its own) or flat; flat options belong to the one remote backend the
    manifest uses (``home``, from :meth:`otaudit.data.manifest.Manifest.options_home`) and
    are never given to a local file or another backend (``home=None``: any remote one).
    """
    proto = protocol_of(uri)
    base: dict[str, Any] = {}
    opts = dict(manifest_options or {})
    if is_protocol_keyed(opts):
        for key, value in opts.items():
            if _PROTOCOL_ALIASES.get(key.lower(), key.lower()) == proto:
                base.update(value or {})
    elif opts and proto != "file" and (home is None or protocol_of(home + "://") == proto):
        base = opts
    return {**base, **dict(own or {})}


#: Backends that may key manifest-level storage options.
PROTOCOL_KEYS = frozenset({"s3", "gs", "az", "http", "https", "memory", "file", "hdfs", "sftp"})


def is_protocol_keyed(opts: Mapping[str, Any]) -> bool:
    """Whether manifest-level ``storage_options`` are keyed by protocol (``{s3: {...}}``)."""
    return bool(opts) and all(
        isinstance(k, str)
        and _PROTOCOL_ALIASES.get(k.lower(), k.lower()) in PROTOCOL_KEYS
        and isinstance(v, Mapping | type(None))
        for k, v in opts.items()
    )
