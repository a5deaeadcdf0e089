"""Errors and warnings of otaudit.

Every error a user can trigger with bad input is an :class:`InputError` whose message is
one line naming the dataset, the field and the fix, e.g.::

    dataset 'vendor_a', field 'features': 3 rows contain NaN or inf (first at row 17);
    fix: drop or impute those rows before the audit
"""

from __future__ import annotations

__all__ = [
    "describe_error",
    "OTAuditError",
    "InputError",
    "StorageError",
    "SolverError",
    "OTAuditWarning",
    "ConvergenceWarning",
    "FallbackWarning",
]


class OTAuditError(Exception):
    """Base class of every error raised on purpose by otaudit."""


class InputError(OTAuditError, ValueError):
    """Bad input: the message names the dataset, the field and the fix, on one line."""

    def __init__(
        self,
        problem: str,
        *,
        dataset: str | None = None,
        field: str | None = None,
        fix: str | None = None,
    ):
        self.problem = problem
        self.dataset = dataset
        self.field = field
        self.fix = fix
        parts = []
        if dataset is not None:
            parts.append(f"dataset {dataset!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        head = ", ".join(parts)
        msg = f"{head}: {problem}" if head else problem
        if fix:
            msg += f"; fix: {fix}"
        super().__init__(" ".join(msg.split()))  # always one line


class StorageError(OTAuditError, OSError):
    """Storage unreachable, file missing or corrupt (the message says which and where)."""


class SolverError(OTAuditError, RuntimeError):
    """A solver failed to produce a trustworthy answer (never silently returned)."""


class OTAuditWarning(UserWarning):
    """Base class of otaudit's warnings (turned into errors in the test-suite)."""


class ConvergenceWarning(OTAuditWarning):
    """An iterative solver stopped before its tolerance; the message names the knob."""


class FallbackWarning(OTAuditWarning):
    """A requested resource (e.g. a GPU) is absent and a fallback is used; said once."""


def describe_error(error: BaseException) -> str:
    """One line: otaudit's errors carry their own message; anything else gets its type name
    (the ``error`` column of a failed dataset or pair)."""
    msg = " ".join(str(error).split())
    if isinstance(error, OTAuditError):
        return msg
    return f"{type(error).__name__}: {msg}"
