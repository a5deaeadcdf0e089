"""The strict base of every manifest model and the validation-error helpers the models share
(:mod:`otaudit.data.manifest`, :mod:`otaudit.data.embedder_spec`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from .secrets import redact

__all__ = ["_Model", "_err", "_check_name", "_NAME_RE", "_DEVICE_RE"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _err(
    problem: str, fix: str, field: str | None = None, dataset: str | None = None
) -> PydanticCustomError:
    """A validation error carrying our problem/fix (and optionally field/dataset) in its ctx."""
    ctx: dict[str, Any] = {"problem": problem, "fix": fix}
    if field is not None:
        ctx["field"] = field
    if dataset is not None:
        ctx["dataset"] = dataset
    return PydanticCustomError("otaudit", "{problem}; fix: {fix}", ctx)


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise _err(
            f"{what} {value!r} is not a safe storage name (it becomes part of storage keys)",
            "use 1-128 characters from A-Z a-z 0-9 _ . - starting with a letter or digit, "
            "without '..' or slashes",
        )
    return value


class _Model(BaseModel):
    """Strict base: unknown keys are errors; secrets are masked in ``repr``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __repr_args__(self):  # noqa: D105 - pydantic hook
        for k, v in super().__repr_args__():
            yield k, redact(v) if k in ("storage_options", "uri", "output") else v
