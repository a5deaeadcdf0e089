"""Preflight (issues 16/17): everything knowable about an audit without reading data, checked
before any Prefect server or Dask cluster starts.

Per dataset (:func:`otaudit.data.readers.probe_dataset`): the file exists, its Parquet footer
has the feature/label columns (numeric, or text for a text embedder), the feature dimension
from the footer (fixed-size-list size or column count) or the .npy header; the embedder's
output dimension where it is knowable (``identity``: the input dimension;
``random-projection``/``pca``: ``dim``; a sentence-transformers model: its JSON metadata,
checked against a declared ``dim``; other model files: a declared ``dim``, else unknown).
Then the dimensions of the selected pairs.

Policy: one bad dataset fails its own pairs, not the audit. A preflight problem of one
dataset, or a dimension mismatch of one pair, is reported (one line each, ``warnings``) and the
flow runs; the flow then fails exactly those datasets / pairs with the same reasons. Only when
**no selected pair can be computed** is the audit meaningless: :func:`check_preflight` raises
one :class:`~otaudit.errors.InputError` naming the datasets and dimensions, and the CLI exits 1
within seconds (not after embedding).

A storage error that is not "not found" (network, throttling, credentials) is transient as far
as preflight can tell: the dataset counts as unknown (warning), never as failed, so retries in
the flow still get their chance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.secrets import redact_uri
from ..errors import InputError, StorageError

__all__ = ["Preflight", "preflight", "check_preflight", "output_dim"]


@dataclass
class Preflight:
    """What preflight found: per dataset its input and output dimensions (None: unknown),
    its definite problem (the dataset will fail), pairs that cannot be computed."""

    input_dims: dict[str, int | None] = field(default_factory=dict)
    dims: dict[str, int | None] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)
    bad_pairs: dict[tuple[str, str], str] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def computable(self) -> list[tuple[str, str]]:
        """Selected pairs not known to fail."""
        return [p for p in self.pairs if p not in self.bad_pairs]

    def warnings(self) -> list[str]:
        """One line per dataset problem and per pair that will fail."""
        out = [f"preflight: {msg} (its pairs will fail)" for msg in self.problems.values()]
        out += [f"preflight: {msg} (not checked)" for msg in self.unknown.values()]
        out += [
            f"preflight: pair {a} - {b}: {msg}"
            for (a, b), msg in self.bad_pairs.items()
            if a not in self.problems and b not in self.problems
        ]
        return out


def output_dim(spec: Any, input_dim: int | None) -> int | None:
    """The embedder's output dimension when it is knowable without data (else None):
    ``identity``: the input dimension; ``random-projection``/``pca``: ``dim``; a model
    embedder: its local metadata (:func:`otaudit.data.model_meta.model_output_dim`), else
    the manifest's declared ``dim``, else None.

    Raises:
        InputError: a model embedder's declared ``dim`` differs from its metadata.
    """
    emb = spec.embedder
    if emb.kind == "identity":
        return input_dim
    if emb.kind in ("random-projection", "pca"):
        return emb.dim  # None (pca without dim): decided by the data
    from ..data.model_meta import model_output_dim

    meta = model_output_dim(emb.kind, emb.local_path)
    if meta.dim is not None and emb.dim is not None and meta.dim != emb.dim:
        raise InputError(
            f"embedder dim {emb.dim} differs from the model's output size {meta.dim} "
            f"(read from {meta.source})",
            dataset=spec.name,
            field="embedder.dim",
            fix=f"set `dim: {meta.dim}` or remove `dim`",
        )
    return meta.dim if meta.dim is not None else emb.dim


def _not_found(e: StorageError) -> bool:
    return " not found" in str(e)


def preflight(m: Any, pairs: list[tuple[str, str]] | None = None) -> Preflight:
    """Probe every dataset of manifest ``m`` (metadata only) and the selected pairs."""
    from ..data.manifest import select_pairs
    from ..data.readers import probe_dataset

    pf = Preflight(pairs=list(select_pairs(m) if pairs is None else pairs))
    needed = {n for p in pf.pairs for n in p}
    for spec in m.datasets:
        if spec.name not in needed:
            continue
        try:
            d_in = probe_dataset(spec, m.dataset_storage_options(spec))
        except InputError as e:
            pf.problems[spec.name] = redact_uri(str(e))
            continue
        except StorageError as e:
            msg = redact_uri(str(e))
            if not msg.startswith("dataset "):
                msg = f"dataset {spec.name!r}: {msg}"
            (pf.problems if _not_found(e) else pf.unknown)[spec.name] = msg
            continue
        pf.input_dims[spec.name] = d_in
        if spec.embedder.kind == "pca" and spec.embedder.dim and d_in and spec.embedder.dim > d_in:
            pf.problems[spec.name] = str(
                InputError(
                    f"PCA dim {spec.embedder.dim} exceeds the feature dimension {d_in}",
                    dataset=spec.name,
                    field="embedder.dim",
                    fix=f"use dim <= {d_in}",
                )
            )
            continue
        try:
            pf.dims[spec.name] = output_dim(spec, d_in)
        except InputError as e:
            pf.problems[spec.name] = redact_uri(str(e))
    for a, b in pf.pairs:
        bad = [n for n in (a, b) if n in pf.problems]
        if bad:
            pf.bad_pairs[(a, b)] = f"dataset {bad[0]!r} fails: {pf.problems[bad[0]]}"
            continue
        da, db = pf.dims.get(a), pf.dims.get(b)
        if da is not None and db is not None and da != db:
            pf.bad_pairs[(a, b)] = f"dimension mismatch: {a!r} has d={da}, {b!r} has d={db}"
    return pf


def check_preflight(m: Any, pairs: list[tuple[str, str]] | None = None) -> Preflight:
    """:func:`preflight`, raising one InputError when no selected pair can be computed."""
    pf = preflight(m, pairs)
    if pf.pairs and not pf.computable:
        reasons = list(dict.fromkeys(pf.bad_pairs.values()))
        shown = "; ".join(reasons[:3]) + (
            f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        )
        mismatch = any("dimension mismatch" in r for r in reasons)
        raise InputError(
            f"no pair of the audit can be computed: {shown}",
            field="datasets",
            fix=(
                "embed the datasets to one output dimension (same features, or an embedder "
                "with the same `dim`), or audit them separately"
                if mismatch
                else "fix the datasets named above"
            ),
        )
    return pf
