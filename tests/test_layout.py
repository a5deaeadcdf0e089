"""The layers, as a test (docs/ARCHITECTURE.md is the same map in prose).

Every import of every module under ``lib/`` (``otaudit``), ``tasks/`` (``otaudit.tasks``)
and ``flows/`` (``otaudit.flows``) is read from the AST — function-local imports and
imports under ``if TYPE_CHECKING`` included, relative imports resolved against the
importing module's package — and the rules below are checked on that graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> package name (pyproject's ``package-dir``).
PACKAGES = {
    ROOT / "lib": "otaudit",
    ROOT / "tasks": "otaudit.tasks",
    ROOT / "flows": "otaudit.flows",
}

STORAGE_ORCHESTRATION_PLOTTING = {
    "fsspec",
    "s3fs",
    "pyarrow",
    "prefect",
    "prefect_dask",
    "dask",
    "distributed",
    "matplotlib",
    "yaml",
    "pydantic",
    "pydantic_settings",
}
NUMERICS = {"torch", "numpy", "scipy", "ot", "sklearn"}
#: What flows/ may import besides the standard library: tasks, Prefect, Dask.
FLOW_ALLOWED = {"prefect", "prefect_dask", "dask", "distributed"}
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 150
#: Known debt, listed so it stays visible (each entry: its length today, which must not grow).
#: Empty: otdd_flow (issue 15, 198 lines) was split into stages (issue 11).
KNOWN_LONG_FUNCTIONS: dict[str, int] = {}


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is_package) of a source file."""
    for src, pkg in PACKAGES.items():
        if path.is_relative_to(src):
            rel = path.relative_to(src).with_suffix("").parts
            if rel[-1] == "__init__":
                return ".".join((pkg, *rel[:-1])), True
            return ".".join((pkg, *rel)), False
    raise AssertionError(f"{path} is outside the packages")


@cache
def _sources() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for src in PACKAGES:
        for path in sorted(src.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            out[_module_name(path)[0]] = path
    return out


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def _imports(module: str) -> frozenset[str]:
    """Every module name ``module`` imports (``from a import b`` yields ``a`` and, when it
    is one of ours, ``a.b``)."""
    path = _sources()[module]
    is_pkg = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, is_pkg)
            names.add(target)
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in _sources():
                    names.add(sub)
    return frozenset(n for n in names if n)


def _ours(name: str) -> str | None:
    """The module of ours that importing ``name`` loads last (its longest known prefix)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in _sources():
            return cand
    return None


def _top(name: str) -> str:
    return name.split(".")[0]


def _internal_edges(module: str) -> set[str]:
    out = set()
    for name in _imports(module):
        if _top(name) == "otaudit":
            target = _ours(name)
            if target is not None and target != module:
                out.add(target)
    return out


def _in(module: str, *layers: str) -> bool:
    return any(module == f"otaudit.{x}" or module.startswith(f"otaudit.{x}.") for x in layers)


def _violations(pred) -> dict[str, list[str]]:
    bad = {}
    for module in _sources():
        hits = sorted(n for n in _imports(module) if pred(module, n))
        if hits:
            bad[module] = hits
    return bad


def test_the_walk_sees_every_layer_and_function_local_imports():
    mods = _sources()
    for layer in ("core", "dataset_distance", "data", "audit", "app", "tasks", "flows"):
        assert any(_in(m, layer) for m in mods), f"no module found in otaudit.{layer}"
    assert any(_in(t, "data", "audit") for m in mods if _in(m, "tasks") for t in _imports(m))
    # function-local, relative imports count: prepare_dataset imports the embedding code
    # inside its body (`from ..data.embedding import embed_dataset`)
    assert "otaudit.data.embedding" in _imports("otaudit.audit.prepare")


def test_no_import_cycle_between_modules():
    graph = {m: _internal_edges(m) for m in _sources()}
    # a package's __init__ importing its own submodules is how packages re-export, and the
    # submodule importing a sibling through the package is the same edge: only cycles
    # among non-__init__ modules, or through an __init__ of ANOTHER package, count.
    for m, deps in graph.items():
        if _sources()[m].name == "__init__.py":
            graph[m] = {d for d in deps if not d.startswith(m + ".")}
    for m in graph:
        graph[m] = {
            d
            for d in graph[m]
            if not (_sources()[d].name == "__init__.py" and m.startswith(d + "."))
        }
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if color.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in color and (cyc := visit(d)):
                return cyc
        stack.pop()
        color[m] = 2
        return None

    for m in sorted(graph):
        if m not in color and (cyc := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cyc))


def test_numerics_import_no_storage_orchestration_or_upper_layer():
    upper = ("data", "audit", "app", "tasks", "flows")
    bad = _violations(
        lambda m, n: (
            _in(m, "core", "dataset_distance")
            and (_top(n) in STORAGE_ORCHESTRATION_PLOTTING or _in(n, *upper))
        )
    )
    assert bad == {}


def test_lib_does_not_import_dask():
    """Issue 14: the library takes any ``concurrent.futures.Executor``; Dask stays in
    tasks/ and flows/ (the pipeline hands the cluster's executor down)."""
    dask = {"dask", "distributed", "prefect_dask"}
    bad = _violations(lambda m, n: not _in(m, "tasks", "flows") and _top(n) in dask)
    assert bad == {}


def test_data_layer_imports_no_upper_layer():
    bad = _violations(lambda m, n: _in(m, "data") and _in(n, "audit", "app", "tasks", "flows"))
    assert bad == {}


def test_nothing_imports_the_app_layer():
    bad = _violations(lambda m, n: not _in(m, "app") and _in(n, "app"))
    assert bad == {}


def test_tasks_do_no_numerics():
    bad = _violations(lambda m, n: _in(m, "tasks") and _top(n) in NUMERICS)
    assert bad == {}


def test_flows_only_compose_tasks():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}

    def bad_import(m: str, n: str) -> bool:
        if not _in(m, "flows"):
            return False
        if _top(n) == "otaudit":
            return not _in(n, "tasks", "flows")
        return _top(n) not in stdlib | FLOW_ALLOWED

    assert _violations(bad_import) == {}


def test_only_storage_imports_fsspec():
    bad = _violations(lambda m, n: _top(n) == "fsspec" and m != "otaudit.data.storage")
    assert bad == {}


def test_no_long_files_or_functions():
    long_files = {}
    long_funcs = {}
    for module, path in _sources().items():
        text = path.read_text()
        n_lines = len(text.splitlines())
        if path.is_relative_to(ROOT / "lib") and n_lines > MAX_FILE_LINES:
            long_files[module] = n_lines
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                name = f"{module}.{node.name}"
                if length > max(MAX_FUNCTION_LINES, KNOWN_LONG_FUNCTIONS.get(name, 0)):
                    long_funcs[name] = length
    assert long_files == {}, f"files over {MAX_FILE_LINES} lines"
    assert long_funcs == {}, f"functions over {MAX_FUNCTION_LINES} lines"


def test_importing_otaudit_does_not_import_orchestration():
    code = (
        "import sys, otaudit; "
        "bad = [m for m in ('prefect', 'dask', 'distributed', 'fsspec', 's3fs', 'matplotlib')"
        " if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`import otaudit` pulled in: {out.stdout.strip()}"
