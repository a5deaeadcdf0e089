"""Raw manifest input: ``${VAR}`` expansion in storage options, and validation errors
as one-line :class:`~otaudit.errors.InputError` (:func:`pydantic_to_input_error`).

pydantic reports a list of errors with locations; the audit reports ONE line naming the
dataset, the field and the fix (docs/manifest.md). Split out of :mod:`otaudit.data.manifest`,
which owns the models and calls :func:`pydantic_to_input_error` on a failed validation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import InputError
from .secrets import MASK, is_secret_key, redact

__all__ = ["pydantic_to_input_error", "expand_env"]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_TYPE_FIX = {
    "greater_than": "use a value > {gt}",
    "greater_than_equal": "use a value >= {ge}",
    "less_than": "use a value < {lt}",
    "less_than_equal": "use a value <= {le}",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "finite_number": "use a finite number",
    "string_type": "use a quoted string",
    "dict_type": "use a mapping (key: value)",
    "list_type": "use a list ([a, b])",
    "bool_parsing": "use true or false",
    "bool_type": "use true or false",
    "model_type": "use a mapping (key: value)",
    "model_attributes_type": "use a mapping (key: value)",
}


def pydantic_to_input_error(
    exc: ValidationError,
    data: Mapping[str, Any],
    model_at: Callable[[tuple[Any, ...]], type[BaseModel] | None],
) -> InputError:
    """Turn the first pydantic error into our one-line InputError.

    ``model_at(loc)`` is the manifest model at a location (to list a model's allowed keys).
    """
    errors = exc.errors(include_url=False)
    # pairs: pydantic reports one error per union member; prefer the most specific
    first = errors[0]
    for e in errors:
        if e["type"] == "otaudit":
            first = e
            break
    loc = tuple(first["loc"])
    # drop union-member tags (e.g. 'literal['all']', 'PairsNew') from the location
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p)))
    dataset: str | None = None
    rest = loc
    if len(loc) >= 2 and loc[0] == "datasets" and isinstance(loc[1], int):
        i = loc[1]
        raw = data.get("datasets") or []
        raw_i = raw[i] if isinstance(raw, list) and i < len(raw) else None
        nm = raw_i.get("name") if isinstance(raw_i, Mapping) else None
        dataset = nm if isinstance(nm, str) and nm else f"datasets[{i}]"
        rest = loc[2:]
    typ = first["type"]
    ctx = first.get("ctx") or {}
    field = ".".join(str(p) for p in rest) or None
    n_more = len({tuple(e["loc"])[:1] + tuple(e["loc"])[1:3] for e in errors}) - 1
    if typ == "otaudit":
        problem, fix = ctx["problem"], ctx["fix"]
        if ctx.get("field"):
            field = ctx["field"]
        if ctx.get("dataset"):
            dataset = ctx["dataset"]
    elif typ == "extra_forbidden":
        parent = model_at(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else ""
        problem = f"unknown key {loc[-1]!r}"
        fix = "remove it or check its spelling" + (f" (allowed: {allowed})" if allowed else "")
    elif typ == "missing":
        problem = "required field is missing"
        fix = f"add `{rest[-1]}: ...`" if rest else "add it"
    elif typ in ("literal_error", "enum"):
        problem = f"unknown value {first.get('input')!r}"
        fix = f"use one of {ctx.get('expected', '')}"
    elif typ in ("too_short", "too_long"):
        problem = first["msg"][0].lower() + first["msg"][1:]
        fix = "check the number of entries"
    else:
        inp = first.get("input")
        shown = repr(inp) if not isinstance(inp, Mapping | list) else type(inp).__name__
        if field and ("storage_options" in field or is_secret_key(field)):
            shown = MASK
        msg = first["msg"]
        problem = f"{msg[0].lower()}{msg[1:]} (got {shown})"
        fix = _TYPE_FIX.get(typ, "correct the value as the problem says").format(**ctx)
    if field and field.startswith("pairs"):
        field = "pairs"
        if typ != "otaudit":
            problem = f"invalid pairs value {redact(data.get('pairs'))!r}"
            n_more = len({tuple(e["loc"])[:1] for e in errors}) - 1
            fix = "use `all`, `{new: [names]}` or `{target: name}`"
    if n_more:
        problem += f" (and {n_more} more problem{'s' if n_more > 1 else ''})"
    return InputError(problem, dataset=dataset, field=field, fix=fix)


def expand_env(obj: Any, where: str) -> Any:
    """Replace ``${VAR}`` in storage_options string values by the environment's value."""
    if isinstance(obj, Mapping):
        return {k: expand_env(v, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_env(v, where) for v in obj]
    if isinstance(obj, str):

        def sub(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise InputError(
                    f"environment variable {var} is not set",
                    field=where,
                    fix=f"export {var}=... before running, or remove ${{{var}}}",
                )
            return os.environ[var]

        return _ENV_RE.sub(sub, obj)
    return obj
