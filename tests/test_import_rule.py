"""The numerical core stays pure: no orchestration or storage imports in lib/ outside the
modules whose job is I/O (STYLE.md: `lib/` is numerics and data model)."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
FORBIDDEN = {"prefect", "prefect_dask", "dask", "distributed", "fsspec", "s3fs", "pyarrow", "boto3"}
# Modules whose job is I/O, configuration or the command line may use them.
CORE_PACKAGES = ("core", "dataset_distance")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_numerical_core_imports_no_orchestration_or_storage():
    checked = 0
    offenders = {}
    for path in sorted(p for pkg in CORE_PACKAGES for p in (LIB / pkg).rglob("*.py")):
        checked += 1
        bad = _imports(path) & FORBIDDEN
        if bad:
            offenders[str(path.relative_to(LIB))] = sorted(bad)
    assert checked >= 5, "expected the numerical core modules to be present"
    assert offenders == {}, f"numerical core imports orchestration/storage packages: {offenders}"


def test_importing_otaudit_does_not_import_orchestration():
    import subprocess
    import sys

    code = (
        "import sys, otaudit; "
        "bad = [m for m in ('prefect', 'dask', 'distributed', 'fsspec', 's3fs') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`import otaudit` pulled in: {out.stdout.strip()}"
