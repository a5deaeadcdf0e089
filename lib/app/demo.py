"""The demo registry: sklearn's digits (ships with scikit-learn, offline) split into
"vendors" with planted drift, written as Parquet, plus the manifest that audits them.

Vendors (8x8 digit images, 64 features, labels 0-9):

- ``vendor_a`` / ``vendor_b``: the two halves of a random split — the same distribution;
  their distance (OTDD ~31 on 898 points) is the finite-sample baseline of "no drift".
- ``vendor_noisy``: ``vendor_b`` plus Gaussian pixel noise (``config.DEMO_NOISE_STD``).
- ``vendor_flipped``: ``vendor_a`` with every image mirrored left-right (covariate shift).
- ``vendor_missing``: ``vendor_b`` without the classes 7, 8 and 9 (label shift).
- ``vendor_relabeled``: ``vendor_a`` with the labels renamed through a permutation, as
  strings (``"digit-k"``). OTDD is invariant to renaming labels: its distance to
  ``vendor_a`` is exactly 0 — the near-duplicate the summary points out.

The manifest flags pairs with OTDD above ``config.DEMO_OTDD_THRESHOLD`` (the mirrored vendor)
and explains two drifts with OTDD gradient flows (``explain:``): the mirrored vendor (a
covariate shift: in the features) and the missing-classes vendor (class structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import config
from ..data.parquet import dataset_table, table_bytes, write_dataset_parquet

__all__ = ["VENDORS", "demo_datasets", "write_demo", "write_if_changed", "demo_manifest"]

VENDORS = (
    "vendor_a",
    "vendor_b",
    "vendor_noisy",
    "vendor_flipped",
    "vendor_missing",
    "vendor_relabeled",
)


def demo_datasets(seed: int = config.DEMO_SEED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (X [n, 64] float32, y [n])}`` for the demo vendors (deterministic)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    ia, ib = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2 :])
    Xa, ya, Xb, yb = X[ia], y[ia], X[ib], y[ib]
    noisy = (Xb + rng.normal(0.0, config.DEMO_NOISE_STD, Xb.shape)).astype(np.float32)
    flipped = Xa.reshape(-1, 8, 8)[:, :, ::-1].reshape(-1, 64).copy()
    keep = yb < 7
    rename = rng.permutation(10)
    relabeled = np.array([f"digit-{rename[k]}" for k in ya])
    return {
        "vendor_a": (Xa, ya),
        "vendor_b": (Xb, yb),
        "vendor_noisy": (noisy, yb),
        "vendor_flipped": (flipped, ya),
        "vendor_missing": (Xb[keep], yb[keep]),
        "vendor_relabeled": (Xa, relabeled),
    }


def write_demo(out: str | Path, seed: int = config.DEMO_SEED) -> dict[str, Path]:
    """Write every vendor as ``<out>/data/<name>.parquet`` (columns ``features``, ``label``;
    :func:`otaudit.data.parquet.write_dataset_parquet`); returns their paths.

    A file that already holds exactly these bytes is left alone (not rewritten), so that a
    second ``otaudit demo`` sees unchanged datasets and takes everything from the cache."""
    data = Path(out) / "data"
    paths = {}
    for name, (X, y) in demo_datasets(seed).items():
        path = data / f"{name}.parquet"
        content = table_bytes(dataset_table(name, X, y), row_group_size=config.SHARD_ROWS)
        if not (path.is_file() and path.read_bytes() == content):
            path = Path(write_dataset_parquet(str(data), name, X, y))
        paths[name] = path
    return paths


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` unless it already holds it; True when written."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def demo_manifest(
    out: str | Path,
    paths: dict[str, Path],
    *,
    otdd_threshold: float = config.DEMO_OTDD_THRESHOLD,
) -> str:
    """The demo manifest (YAML text): all pairs, OTDD (exact) and mini-batch OT bounds."""
    import yaml

    doc = {
        "name": "digits-vendors",
        "output": str(Path(out).resolve() / "reports"),
        "datasets": [
            {"name": n, "uri": str(p.resolve()), "features": "features", "label": "label"}
            for n, p in paths.items()
        ],
        "measures": {"otdd": {"inner": "exact"}, "ot_bounds": {"batch_size": 128}},
        "pairs": "all",
        "thresholds": {"otdd": float(otdd_threshold)},
        # what moved: the mirrored vendor (features) and the missing-classes vendor (classes)
        "explain": {"pairs": [["vendor_a", "vendor_flipped"], ["vendor_b", "vendor_missing"]]},
        "schedule": config.DEFAULT_CRON,
    }
    return yaml.safe_dump(doc, sort_keys=False)
