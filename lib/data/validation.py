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

__all__ = [
    "pydantic_to_input_error",
    "expand_env",
    "check_solver_options",
    "check_inner_options",
    "check_whole",
    "check_number",
    "option_types",
    "load_yaml",
]

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


# --- measure options (issue 16: every option checked before any dataset is read) -----------

#: Anytime knobs every solver route takes (``progress`` is a callable: not from YAML).
_ANYTIME = {"target_gap": "float", "time_limit": "float | None"}
#: Upper limits of whole-number options (config.MANIFEST_MAX_*); others: MANIFEST_MAX_ITER.
_INT_LIMIT = {
    "batch_size": "MANIFEST_MAX_BATCH_SIZE",
    "budget": "MANIFEST_MAX_BUDGET",
    "refine": "MANIFEST_MAX_ROUNDS",
    "n_permutations": "MANIFEST_MAX_ROUNDS",
    "lower_rounds": "MANIFEST_MAX_ROUNDS",
    "max_exact": "MANIFEST_MAX_ITER",
    "n_projections": "MANIFEST_MAX_PROJECTIONS",
    "n_frames": "MANIFEST_MAX_FRAMES",
    "steps": "MANIFEST_MAX_FLOW_STEPS",
    "shard_rows": "MANIFEST_MAX_SHARD_ROWS",
}
_SEED_MAX = 2**63 - 1


def _choices() -> dict[str, tuple[str, ...]]:
    from ..core import settings as s

    return {
        "partition": s.PARTITIONS,
        "coupling": s.COUPLINGS,
        "block_solver": s.BLOCK_SOLVERS,
        "lower": s.LOWER_METHODS,
        "solver": s.SOLVERS,
    }


def option_types(solver: str) -> dict[str, str]:
    """``{option: type}`` the named solver takes (``"auto"``: every solver's options), from
    the typed settings of :mod:`otaudit.core.settings`, plus the anytime knobs."""
    from dataclasses import fields

    from ..core import settings as s

    names = list(s.SETTINGS) if solver == "auto" else [solver]
    out: dict[str, str] = {}
    for name in names:
        for f in fields(s.SETTINGS[name]):
            out.setdefault(f.name, str(f.type))
    return {**out, **_ANYTIME}


def size_limit(name: str) -> int:
    """The largest value allowed for the whole-number option ``name``."""
    from .. import config

    return (
        _SEED_MAX
        if name == "seed"
        else int(getattr(config, _INT_LIMIT.get(name, "MANIFEST_MAX_ITER")))
    )


def check_whole(name: str, v: Any, *, low: int = 1, nullable: bool = False) -> Any:
    """A whole number ``low <= v <= limit`` (not a bool, a string or a fractional float)."""
    from .spec_base import _err

    if v is None and nullable:
        return v
    limit = size_limit(name)
    ok = not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and v.is_integer())
    )
    if not ok or not (low <= v <= limit):
        raise _err(
            f"{name} must be a whole number from {low} to {limit}, got {v!r}",
            f"use a whole number <= {limit}" + (" (or null)" if nullable else ""),
        )
    return int(v)


def check_number(name: str, v: Any, *, low: float | None = 0.0, nullable: bool = False) -> Any:
    """A finite real number (not a bool, not a string), ``>= low`` when ``low`` is given."""
    import math

    from .spec_base import _err

    if v is None and nullable:
        return v
    ok = not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)
    if not ok or (low is not None and v < low):
        bound = f" >= {low:g}" if low is not None else ""
        raise _err(
            f"{name} must be a finite number{bound}, got {v!r}",
            f"give a finite number{bound}"
            + (" (or null)" if nullable else "")
            + (" without quotes" if isinstance(v, str) else ""),
        )
    return float(v) if isinstance(v, float) else v


def check_solver_options(
    opts: Any, solver: str, where: str, *, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Validate ``opts`` (a manifest ``options`` mapping) for ``solver``: every key an option
    of that solver (``"auto"``: of any solver), every value of its type, finite and within
    ``config.MANIFEST_MAX_*``. ``extra``: more allowed keys (name -> type; ``"inner"``:
    the inner-solver options of the OTDD label costs)."""
    from .spec_base import _err

    if opts is None:
        return {}
    if not isinstance(opts, Mapping):
        raise _err(f"{where} must be a mapping, got {type(opts).__name__}", "use key: value pairs")
    types = {**option_types(solver), **dict(extra or {})}
    choices = _choices()
    out: dict[str, Any] = {}
    for key, v in opts.items():
        if key not in types:
            if solver != "auto" and key in option_types("auto"):
                raise _err(
                    f"option {key!r} does not apply to solver {solver!r}",
                    "drop it or choose the solver that takes it",
                    field=f"{where}.{key}",
                )
            raise _err(
                f"unknown option {key!r}",
                f"remove it or check its spelling (valid: {', '.join(sorted(types))})",
                field=f"{where}.{key}",
            )
        typ = types[key]
        nullable = "None" in typ
        try:
            if key == "inner_options":
                out[key] = check_inner_options(v, f"{where}.{key}")
            elif key in choices:
                if v not in choices[key]:
                    raise _err(f"unknown value {v!r}", f"use one of {', '.join(choices[key])}")
                out[key] = v
            elif typ.startswith("int"):
                low = 0 if key in ("seed", "refine") else 1
                out[key] = check_whole(key, v, low=low, nullable=nullable)
            elif typ.startswith("float"):
                out[key] = check_number(key, v, nullable=nullable)
                if key in ("time_limit", "reg", "tol") and out[key] == 0:
                    raise _err(f"{key} must be > 0, got {v!r}", "give a positive number")
            else:
                out[key] = v
        except Exception as e:  # re-tag with the full field path
            ctx = getattr(e, "context", None) or {}
            if "problem" not in ctx:
                raise
            inner = str(ctx.get("field") or "")
            field = inner if inner.startswith(f"{where}.{key}.") else f"{where}.{key}"
            raise _err(ctx["problem"], ctx["fix"], field=field) from None
    return out


def check_inner_options(opts: Any, where: str) -> dict[str, Any]:
    """The OTDD label costs' ``inner_options``: ``max_exact``, ``solver``, ``options``."""
    from .spec_base import _err

    if not isinstance(opts, Mapping):
        raise _err(f"{where} must be a mapping", "use {max_exact: N, solver: S, options: {...}}")
    allowed = ("max_exact", "solver", "options")
    for key in opts:
        if key not in allowed:
            raise _err(
                f"unknown option {key!r}",
                f"remove it or check its spelling (valid: {', '.join(allowed)})",
                field=f"{where}.{key}",
            )
    out = dict(opts)
    if "max_exact" in out:
        out["max_exact"] = check_whole("max_exact", out["max_exact"])
    solver = out.get("solver", "auto")
    if solver not in _choices()["solver"]:
        raise _err(
            f"unknown value {solver!r}",
            f"use one of {', '.join(_choices()['solver'])}",
            field=f"{where}.solver",
        )
    if "options" in out:
        out["options"] = check_solver_options(out["options"], solver, f"{where}.options")
    return out


# --- YAML: duplicate keys and alias expansion -------------------------------------------


def load_yaml(text: str, source: str = "manifest") -> Any:
    """``yaml.safe_load`` with duplicate mapping keys rejected and alias expansion bounded
    (``config.YAML_MAX_ALIASES`` references, ``config.YAML_MAX_NODES`` nodes once expanded):
    one-line InputError naming the line."""
    import yaml

    from .. import config

    class _Loader(yaml.SafeLoader):
        n_aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.n_aliases += 1
                if self.n_aliases > config.YAML_MAX_ALIASES:
                    mark = self.peek_event().start_mark
                    raise InputError(
                        f"{source} uses more than {config.YAML_MAX_ALIASES} YAML aliases "
                        f"(line {mark.line + 1})",
                        field="manifest",
                        fix="write the values out, or use fewer '*alias' references",
                    )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports unhashable keys
                if key in seen:
                    raise InputError(
                        f"{source} repeats the key {key!r} at line {key_node.start_mark.line + 1} "
                        f"(first at line {seen[key]})",
                        field=str(key),
                        fix="keep one of them (YAML would silently use the last)",
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source, config.YAML_MAX_NODES)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expanded_size(root: Any, source: str, limit: int) -> None:
    """Nodes of the document with every alias expanded, counted over the composed graph
    (shared nodes memoised: linear in the YAML, whatever the expansion)."""
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [c for kv in node.value for c in kv]
        return []

    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:  # iterative post-order: deep documents cannot overflow the stack
        node, done = stack.pop()
        if done:
            n = 1 + sum(size.get(id(c), 1) for c in children(node))
            size[id(node)] = min(n, limit + 1)  # a cycle (recursive anchor) counts once
            continue
        if id(node) in size:
            continue
        size[id(node)] = 1  # in progress
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in size)
    if size[id(root)] > limit:
        raise InputError(
            f"{source} expands to more than {limit} YAML nodes (aliases referencing aliases)",
            field="manifest",
            fix="write the values out instead of nesting '*alias' references",
        )
