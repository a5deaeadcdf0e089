"""The audit manifest (SPEC.md section 3): pydantic models, YAML loading, pair selection.

Every bad manifest gives ONE :class:`~otaudit.errors.InputError` whose message is one line
naming the dataset (by name, or ``datasets[i]`` when it has none), the field and the fix::

    dataset 'vendor_a', field 'embedder.kind': unknown value 'bert'; fix: use one of
    'identity', 'torchscript', 'torch', 'sentence-transformers', 'random-projection', 'pca'

Notes on behaviour (documented for users in ``docs/manifest.md``):

- YAML is read with ``yaml.safe_load`` only.
- When the manifest is read from a *file*, relative local paths (``output``, dataset
  ``uri``, embedder ``path``) are resolved against the manifest's directory.
- ``storage_options`` string values may reference environment variables as ``${NAME}``
  so that no secret has to be written in the YAML; credentials may also come from the
  environment / fsspec's own credential chain.  Secrets never appear in ``repr`` and
  :meth:`Manifest.redacted` masks them for anything that is written out.

Deviation from pipeline_api.md: none in names/signatures.  Additions:
``Manifest.dataset(name)``, ``Manifest.dataset_storage_options(name_or_spec)``,
``Manifest.redacted()``, ``parse_manifest(data, base_dir=None)``, ``redact(obj)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .. import config
from ..core.settings import SOLVERS
from ..errors import InputError
from .embedder_spec import EMBEDDER_KINDS, EmbedderSpec
from .secrets import is_protocol_keyed, protocol_of, redact, scoped_options
from .spec_base import _check_name, _err, _Model
from .validation import (
    check_number,
    check_solver_options,
    check_whole,
    expand_env,
    load_yaml,
    pydantic_to_input_error,
)

__all__ = [
    "EmbedderSpec",
    "DatasetSpec",
    "OTDDMeasure",
    "BoundsMeasure",
    "SlicedMeasure",
    "MeasuresSpec",
    "ScreenSpec",
    "ExplainSpec",
    "PairsNew",
    "PairsTarget",
    "Manifest",
    "load_manifest",
    "parse_manifest",
    "select_pairs",
    "redact",
    "EMBEDDER_KINDS",
    "MEASURES",
]

MEASURES = ("otdd", "ot_bounds", "w2", "sliced")


# --- datasets -------------------------------------------------------------------------


class DatasetSpec(_Model):
    """One dataset of the registry."""

    name: str
    uri: str
    format: Literal["auto", "parquet", "npy", "npz", "csv"] = "auto"
    #: One fixed-size-list column, or a list of numeric columns; for text embedders the
    #: text column.  For .npy the field is ignored; for .npz it is the array name.
    features: str | list[str] = "features"
    label: str | None = None
    embedder: EmbedderSpec = Field(default_factory=EmbedderSpec)
    #: Per-dataset override of the manifest's storage_options (shallow merge).
    storage_options: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "dataset name")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.strip():
            raise _err("uri is empty", "give a local path or an fsspec URI (s3://bucket/key)")
        return v

    @field_validator("features")
    @classmethod
    def _features(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise _err("empty list of feature columns", "list at least one column")
            dup = sorted({c for c in v if v.count(c) > 1})
            if dup:
                raise _err(f"duplicate feature columns {dup}", "list each column once")
        elif not v:
            raise _err("empty feature column name", "name the feature column")
        return v

    @property
    def feature_columns(self) -> list[str]:
        """``features`` as a list."""
        return [self.features] if isinstance(self.features, str) else list(self.features)


# --- measures -------------------------------------------------------------------------


class OTDDMeasure(_Model):
    """OTDD settings (passed to ``otaudit.otdd_from_stats``)."""

    inner: Literal["exact", "gaussian"] = config.OTDD_INNER  # type: ignore[assignment]
    solver: Literal["auto", "exact", "sinkhorn", "minibatch"] = config.OTDD_SOLVER  # type: ignore[assignment]
    lambda_x: float = Field(default=config.LAMBDA_X, ge=0)
    lambda_y: float = Field(default=config.LAMBDA_Y, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options(self) -> OTDDMeasure:
        check_solver_options(
            self.options, self.solver, "measures.otdd.options", extra={"inner_options": "dict"}
        )
        return self


class BoundsMeasure(_Model):
    """Mini-batch OT bounds settings (passed to ``otaudit.ot_bounds``)."""

    batch_size: int = Field(default=config.BATCH_SIZE, gt=0)
    budget: int | None = Field(default=config.BUDGET, gt=0)
    partition: str = config.PARTITION
    coupling: str = config.COUPLING
    seed: int = config.SEED
    block_solver: Literal["auto", "exact", "sinkhorn"] = config.BOUNDS_BLOCK_SOLVER  # type: ignore[assignment]

    @field_validator("batch_size", "budget", "seed", mode="before")
    @classmethod
    def _sizes(cls, v: Any, info: Any) -> Any:
        low = 0 if info.field_name == "seed" else 1
        return check_whole(info.field_name, v, low=low, nullable=info.field_name == "budget")

    @field_validator("partition", "coupling", mode="before")
    @classmethod
    def _choice(cls, v: Any, info: Any) -> Any:
        check_solver_options({info.field_name: v}, "minibatch", "measures.ot_bounds")
        return v


class SlicedMeasure(_Model):
    """Sliced screening estimate settings (passed to ``otaudit.sliced_otdd``).

    Its ``value`` is an estimate (``certified=False``), not OTDD; its ``lower`` is a certified
    lower bound on OTDD² for the same ``lambda_x``/``lambda_y``.
    """

    n_projections: int = Field(default=config.SLICED_N_PROJECTIONS, gt=0)
    n_frames: int = Field(default=config.SLICED_N_FRAMES, gt=0)
    lambda_x: float = Field(default=config.LAMBDA_X, ge=0)
    lambda_y: float = Field(default=config.LAMBDA_Y, ge=0)
    seed: int = config.SEED

    @field_validator("n_projections", "n_frames", "seed", mode="before")
    @classmethod
    def _sizes(cls, v: Any, info: Any) -> Any:
        return check_whole(info.field_name, v, low=0 if info.field_name == "seed" else 1)


class MeasuresSpec(_Model):
    """Which measures to compute for every selected pair."""

    otdd: OTDDMeasure | None = None
    ot_bounds: BoundsMeasure | None = None
    w2: dict[str, Any] | None = None
    sliced: SlicedMeasure | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_mappings(cls, data: Any) -> Any:
        # `otdd:` with no value in YAML (None) means "with defaults" when the key is present.
        if isinstance(data, Mapping):
            data = dict(data)
            for key in ("otdd", "ot_bounds", "sliced"):
                if key in data and data[key] is None:
                    data[key] = {}
            if "w2" in data and data["w2"] is None:
                data["w2"] = {}
        return data

    @field_validator("w2")
    @classmethod
    def _w2(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        solver = v.get("solver", "auto")
        if solver not in SOLVERS:
            raise _err(
                f"unknown value {solver!r}",
                f"use one of {', '.join(SOLVERS)}",
                field="measures.w2.solver",
            )
        rest = {k: x for k, x in v.items() if k != "solver"}
        check_solver_options(rest, solver, "measures.w2", extra={"solver": "str"})
        return v

    @model_validator(mode="after")
    def _at_least_one(self) -> MeasuresSpec:
        if all(getattr(self, m) is None for m in MEASURES):
            raise _err(
                "no measure selected",
                "add `otdd: {}` and/or `ot_bounds: {}`, `w2: {}` or `sliced: {}`",
            )
        return self

    @property
    def selected(self) -> list[str]:
        """Names of the selected measures, in a fixed order."""
        return [m for m in MEASURES if getattr(self, m) is not None]


def _default_measures() -> MeasuresSpec:
    return MeasuresSpec(otdd=OTDDMeasure())


# --- pairs ----------------------------------------------------------------------------


class PairsNew(_Model):
    """New datasets against every dataset (``pairs: {new: [a, b]}``)."""

    new: list[str] = Field(min_length=1)


class PairsTarget(_Model):
    """One target against every other dataset (``pairs: {target: name}``)."""

    target: str


class ScreenSpec(_Model):
    """Screening (``screen: {keep: K, order: nearest}``): the sliced estimate is computed for
    every selected pair first; the other measures run only on the ``keep`` pairs with the
    smallest (``nearest``) or largest (``farthest``) estimate (ties: manifest pair order)."""

    keep: int = Field(ge=1)
    order: Literal["nearest", "farthest"] = config.SCREEN_ORDER  # type: ignore[assignment]


class ExplainSpec(_Model):
    """Explanations (``explain: {pairs: flagged, mode: flow, steps: 10}``): an OTDD gradient
    flow (:func:`otaudit.otdd_flow`) of each pair's first dataset toward its second; the
    report gains ``flow_*.parquet``, a summary section and a plot per pair.

    ``pairs``: ``flagged`` (the pairs above a threshold) or a list of ``[a, b]`` names.
    ``export``: also write the flowed dataset (labelled synthetic data) per pair.
    """

    pairs: Literal["flagged"] | list[tuple[str, str]] = "flagged"
    mode: Literal["flow", "geodesic"] = config.FLOW_MODE  # type: ignore[assignment]
    steps: int = Field(default=config.FLOW_STEPS, ge=0)
    step_size: float = Field(default=config.FLOW_STEP, gt=0, le=1)
    top_features: int = Field(default=config.FLOW_TOP_FEATURES, ge=1)
    trajectory_sample: int | None = Field(default=config.FLOW_TRAJECTORY_SAMPLE, ge=1)
    solver: Literal["auto", "exact", "sparse", "minibatch"] = "auto"
    options: dict[str, Any] = Field(default_factory=dict)
    export: bool = False

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, v: Any) -> Any:
        return check_whole("steps", v, low=0)

    @model_validator(mode="after")
    def _options(self) -> ExplainSpec:
        for taken in ("steps", "step_size", "mode", "solver", "trajectory_sample", "names"):
            if taken in self.options:
                raise _err(
                    f"option {taken!r} is set by the explain settings themselves",
                    f"set `explain.{taken}` instead of `explain.options.{taken}`",
                    field=f"explain.options.{taken}",
                )
        check_solver_options(
            self.options,
            self.solver,
            "explain.options",
            extra={"inner_options": "dict", "inner": "str"},
        )
        return self


class Manifest(_Model):
    """A whole audit: datasets, measures, pairs, output location, schedule."""

    name: str
    output: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    datasets: list[DatasetSpec] = Field(min_length=1)
    measures: MeasuresSpec = Field(default_factory=_default_measures)
    pairs: Literal["all"] | PairsNew | PairsTarget = "all"
    #: measure -> largest allowed distance; pairs above are flagged (CLI exit code 3).
    thresholds: dict[str, float] = Field(default_factory=dict)
    #: Rank pairs by the sliced estimate; other measures only on the kept pairs.
    screen: ScreenSpec | None = None
    #: Cron expression for deployments (``"0 3 * * *"``).
    schedule: str | None = None
    shard_rows: int = Field(default=config.SHARD_ROWS, gt=0)
    #: Explain pairs with OTDD gradient flows (``explain:`` with no value: defaults).
    explain: ExplainSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "audit name")

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        if not v.strip():
            raise _err("output is empty", "give a local directory or an fsspec URI")
        return v

    @field_validator("screen", mode="before")
    @classmethod
    def _screen_empty(cls, v: Any) -> Any:
        # `screen:` with no value: report the missing `keep` rather than ignoring the key
        return {} if v is None else v

    @field_validator("explain", mode="before")
    @classmethod
    def _explain_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _explain_pairs(self) -> Manifest:
        names = [d.name for d in self.datasets]
        if self.explain is not None and self.explain.pairs != "flagged":
            for a, b in self.explain.pairs:
                for w in (a, b):
                    if w not in names:
                        raise _err(
                            f"unknown dataset {w!r}",
                            f"use one of the dataset names: {', '.join(names)}",
                            field="explain.pairs",
                        )
                if a == b:
                    raise _err(
                        f"pair [{a}, {b}] names one dataset twice",
                        "name two different datasets",
                        field="explain.pairs",
                    )
        return self

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fields = v.split()
        if v.startswith("@"):
            if v not in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"):
                raise _err(f"unknown cron macro {v!r}", "use @hourly/@daily/@weekly/@monthly")
        elif len(fields) != 5 or not all(re.fullmatch(r"[0-9*/,A-Za-z?-]+", f) for f in fields):
            raise _err(
                f"{v!r} is not a 5-field cron expression",
                "write it as 'minute hour day month weekday', e.g. '0 3 * * *'",
            )
        return v

    @field_validator("thresholds", mode="before")
    @classmethod
    def _threshold_types(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            for k, t in v.items():
                check_number(f"thresholds.{k}", t, low=0)
        return v

    @field_validator("shard_rows", mode="before")
    @classmethod
    def _shard_rows(cls, v: Any) -> Any:
        return check_whole("shard_rows", v)

    @field_validator("storage_options")
    @classmethod
    def _storage_options_shape(cls, v: dict[str, Any]) -> dict[str, Any]:
        if is_protocol_keyed(v):
            for proto, opts in v.items():
                if opts is not None and not isinstance(opts, Mapping):
                    raise _err(
                        f"options for {proto!r} must be a mapping",
                        "use `storage_options: {s3: {key: ..., secret: ...}}`",
                    )
        return v

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for k, t in v.items():
            if k not in MEASURES:
                raise _err(f"unknown measure {k!r}", f"use one of {', '.join(MEASURES)}")
            if not (t >= 0) or t == float("inf"):
                raise _err(
                    f"threshold for {k!r} must be a finite number >= 0, got {t}",
                    "give the largest allowed distance",
                )
        return v

    @model_validator(mode="after")
    def _options_scope(self) -> Manifest:
        if self.storage_options and not is_protocol_keyed(self.storage_options):
            remote = sorted(self.remote_protocols())
            if len(remote) > 1:
                raise _err(
                    f"flat storage_options with several backends ({', '.join(remote)}): "
                    "they would reach a backend they do not belong to",
                    "key them by protocol (`storage_options: {s3: {...}, gs: {...}}`) or "
                    "give each dataset its own storage_options",
                    field="storage_options",
                )
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> Manifest:
        names = [d.name for d in self.datasets]
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                raise _err(
                    f"duplicate dataset name (datasets[{i}] repeats an earlier name)",
                    "give every dataset a unique name",
                    field="name",
                    dataset=n,
                )
            seen.add(n)
        wanted: list[str] = []
        if isinstance(self.pairs, PairsNew):
            wanted = list(self.pairs.new)
        elif isinstance(self.pairs, PairsTarget):
            wanted = [self.pairs.target]
        for w in wanted:
            if w not in seen:
                raise _err(
                    f"unknown dataset {w!r}",
                    f"use one of the dataset names: {', '.join(names)}",
                    field="pairs",
                )
        if self.screen is not None:
            if self.measures.sliced is None:
                raise _err(
                    "screening ranks pairs by the sliced estimate, which is not computed",
                    "add `sliced: {}` under measures, or remove `screen`",
                    field="screen",
                )
            if self.measures.selected == ["sliced"]:
                raise _err(
                    "screening keeps pairs for the other measures, but only `sliced` is selected",
                    "add `otdd: {}`, `ot_bounds: {}` or `w2: {}` under measures, "
                    "or remove `screen`",
                    field="screen",
                )
        for k in self.thresholds:
            if getattr(self.measures, k) is None:
                raise _err(
                    f"threshold given for measure {k!r} which is not computed",
                    f"add `{k}` under measures or remove the threshold",
                    field="thresholds",
                )
        return self

    # --- helpers ---------------------------------------------------------------------
    def dataset(self, name: str) -> DatasetSpec:
        """The dataset called ``name``."""
        for d in self.datasets:
            if d.name == name:
                return d
        raise InputError(
            f"unknown dataset {name!r}",
            field="datasets",
            fix=f"use one of {', '.join(d.name for d in self.datasets)}",
        )

    def remote_protocols(self) -> set[str]:
        """The remote backends (``s3``, ``gs``, ``az`` ...) of the output and the datasets."""
        uris = [self.output, *(d.uri for d in self.datasets)]
        return {p for p in map(protocol_of, uris) if p != "file"}

    def options_home(self) -> str | None:
        """The backend flat manifest-level ``storage_options`` belong to: the one remote
        backend of the manifest (None when there is none)."""
        remote = self.remote_protocols()
        return next(iter(remote)) if len(remote) == 1 else None

    def storage_options_for(self, uri: str, own: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The storage options that go to ``uri``: the manifest's, scoped to ``uri``'s backend
        (:func:`otaudit.data.secrets.scoped_options`), overridden (shallow) by ``own``."""
        home = self.options_home()
        if home is None and not is_protocol_keyed(self.storage_options):
            return dict(own or {})  # flat options and no remote backend: nowhere to go
        return scoped_options(self.storage_options, uri, own, home=home)

    def dataset_storage_options(self, ds: str | DatasetSpec) -> dict[str, Any]:
        """The manifest's storage_options scoped to the dataset's backend, overridden
        (shallow) by the dataset's own."""
        spec = self.dataset(ds) if isinstance(ds, str) else ds
        return self.storage_options_for(spec.uri, spec.storage_options)

    def output_storage_options(self) -> dict[str, Any]:
        """The manifest's storage_options scoped to the output's backend."""
        return self.storage_options_for(self.output)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able dump with secrets masked: use this for anything written out."""
        return redact(self.model_dump(mode="json"))


# --- loading --------------------------------------------------------------------------

_MODEL_FOR_LOC: dict[tuple[str, ...], type[BaseModel]] = {
    (): Manifest,
    ("datasets", "*"): DatasetSpec,
    ("datasets", "*", "embedder"): EmbedderSpec,
    ("measures",): MeasuresSpec,
    ("measures", "otdd"): OTDDMeasure,
    ("measures", "ot_bounds"): BoundsMeasure,
    ("measures", "sliced"): SlicedMeasure,
    ("screen",): ScreenSpec,
    ("explain",): ExplainSpec,
}


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    key = tuple("*" if isinstance(p, int) else p for p in loc)
    return _MODEL_FOR_LOC.get(key)


def _is_local(uri: str) -> bool:
    return "://" not in uri


def _resolve(uri: str, base_dir: Path | None) -> str:
    if base_dir is None or not _is_local(uri):
        return uri
    p = Path(uri).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def parse_manifest(data: Any, *, base_dir: str | Path | None = None) -> Manifest:
    """Validate an already-parsed manifest mapping (one-line InputError on failure)."""
    if not isinstance(data, Mapping):
        raise InputError(
            f"the manifest must be a YAML mapping, got {type(data).__name__}",
            field="manifest",
            fix="start the file with `name: ...`, `output: ...`",
        )
    data = dict(data)
    base = Path(base_dir) if base_dir is not None else None
    # environment references and relative paths, before validation
    if isinstance(data.get("storage_options"), Mapping):
        data["storage_options"] = expand_env(data["storage_options"], "storage_options")
    if isinstance(data.get("output"), str):
        data["output"] = _resolve(data["output"], base)
    if isinstance(data.get("datasets"), list):
        new = []
        for i, d in enumerate(data["datasets"]):
            if isinstance(d, Mapping):
                d = dict(d)
                label = d.get("name") if isinstance(d.get("name"), str) else f"datasets[{i}]"
                if isinstance(d.get("storage_options"), Mapping):
                    try:
                        d["storage_options"] = expand_env(d["storage_options"], "storage_options")
                    except InputError as e:
                        raise InputError(
                            e.problem, dataset=label, field=e.field, fix=e.fix
                        ) from None
                if isinstance(d.get("uri"), str):
                    d["uri"] = _resolve(d["uri"], base)
                emb = d.get("embedder")
                if isinstance(emb, Mapping) and isinstance(emb.get("path"), str):
                    emb = dict(emb)
                    emb["path"] = _resolve(emb["path"], base)
                    d["embedder"] = emb
            new.append(d)
        data["datasets"] = new
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise pydantic_to_input_error(e, data, _model_at) from None


def load_manifest(
    path_or_text: str | Path, *, storage_options: dict[str, Any] | None = None
) -> Manifest:
    """Load and validate a manifest from a path, an fsspec URI or YAML text.

    A ``Path``, or a string without a newline that names an existing file or ends in
    ``.yaml``/``.yml``/``.json``, is read as a file (``storage_options`` are used to read a
    remote one); anything else is parsed as YAML text.  Relative local paths inside a
    manifest file are resolved against the file's directory.
    """
    base_dir: Path | None = None
    source = "manifest"
    if isinstance(path_or_text, Path) or (
        isinstance(path_or_text, str)
        and "\n" not in path_or_text
        and (path_or_text.endswith((".yaml", ".yml", ".json")) or os.path.isfile(path_or_text))
    ):
        src = str(path_or_text)
        source = f"manifest {redact(src)!r}"
        if _is_local(src) or src.startswith("file://"):
            p = Path(src[len("file://") :] if src.startswith("file://") else src).expanduser()
            if not p.is_file():
                raise InputError(
                    f"{source} not found",
                    field="manifest",
                    fix="check the path of the manifest file",
                )
            text = p.read_text(encoding="utf-8")
            base_dir = p.resolve().parent
        else:
            from .storage import Store  # lazy: storage is the only fsspec user

            parent, _, leaf = src.rstrip("/").rpartition("/")
            text = Store(parent, storage_options).read_bytes(leaf).decode("utf-8")
    else:
        text = str(path_or_text)
    try:
        data = load_yaml(text, source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(
            f"{source} is not valid YAML{where}: {what}",
            field="manifest",
            fix="fix the YAML syntax there (indentation, ':' and quotes)",
        ) from None
    return parse_manifest(data, base_dir=base_dir)


def select_pairs(m: Manifest) -> list[tuple[str, str]]:
    """The pairs to compute: ordered (manifest order), deduplicated, no self-pairs.

    Every pair is ``(a, b)`` with ``a`` listed before ``b`` in the manifest.
    ``all`` gives every unordered pair; ``{new: [...]}`` every pair with at least one new
    dataset; ``{target: t}`` every pair containing ``t``.
    """
    names = [d.name for d in m.datasets]
    if m.pairs == "all":
        focus = set(names)
    elif isinstance(m.pairs, PairsNew):
        focus = set(m.pairs.new)
    else:
        focus = {m.pairs.target}
    out: list[tuple[str, str]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a in focus or b in focus:
                out.append((a, b))
    return out
