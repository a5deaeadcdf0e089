"""Masking credentials: the one place that knows what a secret looks like.

Everything otaudit writes out or prints (reports, logs, ``repr`` of manifests and stores,
error messages with a URI) goes through :func:`redact`. Imported by the manifest and the
storage layer alike (it imports nothing of otaudit, so neither depends on the other).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["redact", "MASK", "is_secret_key"]

#: Mapping keys whose values are masked (``storage_options`` keys of fsspec backends).
SECRET_KEY_RE = re.compile(
    r"(key|secret|token|password|passwd|credential|sas|signature|"
    r"connection_string|session)",
    re.IGNORECASE,
)
#: ``scheme://user:password@host`` — the userinfo part of a URI.
URI_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]+)@")
MASK = "***"


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
        return URI_USERINFO_RE.sub(lambda m: f"{m.group(1)}{MASK}@", obj)
    return obj
