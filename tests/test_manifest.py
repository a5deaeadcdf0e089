"""Manifest loading and validation: the SPEC example, every bad-input case (one line naming
the dataset, the field and the fix), secrets redaction, pair selection, settings."""

from __future__ import annotations

import pytest

from otaudit import config
from otaudit.data.manifest import Manifest, load_manifest, select_pairs
from otaudit.errors import InputError

BASE = """
name: nightly-registry
output: s3://bucket/audits
storage_options: {key: AKIAQ7ZC2M9XW4V0TEST, secret: sk-4f1b9e07c2d84a6f, client_kwargs: {endpoint_url: "http://127.0.0.1:9000"}}
datasets:
  - {name: vendor_a, uri: s3://bucket/data/vendor_a.parquet, features: x, label: y, embedder: identity}
  - {name: vendor_b, uri: s3://bucket/data/vendor_b, features: [c1, c2]}
  - {name: vendor_c, uri: s3://bucket/c.npz, embedder: {kind: random-projection, dim: 8}}
measures:
  otdd: {inner: exact}
  ot_bounds: {batch_size: 256, budget: 64}
pairs: all
"""


def test_spec_example_loads():
    m = load_manifest(BASE)
    assert isinstance(m, Manifest)
    assert [d.name for d in m.datasets] == ["vendor_a", "vendor_b", "vendor_c"]
    assert m.datasets[0].embedder.kind == "identity"
    assert m.datasets[1].feature_columns == ["c1", "c2"]
    assert m.measures.ot_bounds.budget == 64 and m.measures.otdd.inner == "exact"
    assert m.measures.ot_bounds.block_solver == "exact"  # config.BOUNDS_BLOCK_SOLVER
    gpu = load_manifest(BASE.replace("budget: 64}", "budget: 64, block_solver: auto}"))
    assert gpu.measures.ot_bounds.block_solver == "auto"
    assert m.measures.selected == ["otdd", "ot_bounds"]
    assert m.shard_rows == config.SHARD_ROWS
    assert m.datasets[0].embedder.rows_per_batch == config.EMBED_ROWS_PER_BATCH
    assert m.dataset_storage_options("vendor_a")["client_kwargs"]["endpoint_url"].endswith("9000")


def test_embedder_batch_size_is_a_deprecated_alias_of_rows_per_batch():
    old = BASE.replace("embedder: identity}", "embedder: {kind: identity, batch_size: 64}}")
    with pytest.warns(FutureWarning, match="`batch_size` is deprecated; write `rows_per_batch`"):
        m = load_manifest(old)
    assert m.datasets[0].embedder.rows_per_batch == 64
    new = load_manifest(old.replace("batch_size: 64", "rows_per_batch: 64"))
    assert new.datasets[0].embedder == m.datasets[0].embedder
    both = old.replace("batch_size: 64", "batch_size: 64, rows_per_batch: 32")
    with pytest.raises(InputError, match="both `batch_size` and `rows_per_batch`.*fix: keep"):
        load_manifest(both)


def test_defaults_minimal(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text(
        "name: a\noutput: out\ndatasets:\n  - {name: x, uri: data/x.parquet}\n"
        "  - {name: y, uri: /abs/y.npz, embedder: {kind: torchscript, path: m.pt}}\n"
    )
    (tmp_path / "m.pt").write_bytes(b"x")
    m = load_manifest(p)
    assert m.measures.otdd is not None and m.measures.ot_bounds is None
    assert m.pairs == "all" and m.thresholds == {} and m.schedule is None
    # relative local paths resolve against the manifest's directory
    assert m.output == str(tmp_path / "out")
    assert m.datasets[0].uri == str(tmp_path / "data" / "x.parquet")
    assert m.datasets[1].uri == "/abs/y.npz"
    assert m.datasets[1].embedder.path == str(tmp_path / "m.pt")
    assert load_manifest(str(p)) == m


def test_secrets_never_in_repr_or_redacted_dump(monkeypatch):
    monkeypatch.setenv("OTAUDIT_TEST_SECRET", "env-8d3c5a1e92f7b604")
    text = BASE.replace("secret: sk-4f1b9e07c2d84a6f", 'secret: "${OTAUDIT_TEST_SECRET}"')
    m = load_manifest(text)
    assert m.storage_options["secret"] == "env-8d3c5a1e92f7b604"  # expanded for fsspec
    for out in (repr(m), str(m), str(m.redacted())):
        assert "env-8d3c5a1e92f7b604" not in out and "AKIAQ7ZC2M9XW4V0TEST" not in out
    red = m.redacted()
    assert red["storage_options"]["secret"] == "***"
    assert red["storage_options"]["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9000"
    with pytest.raises(InputError, match="OTAUDIT_MISSING_VAR is not set.*fix: export"):
        load_manifest(
            BASE.replace("secret: sk-4f1b9e07c2d84a6f", 'secret: "${OTAUDIT_MISSING_VAR}"')
        )


@pytest.mark.parametrize(
    "old,new,dataset,field,needle",
    [
        (
            "embedder: identity",
            "embedder: bert",
            "vendor_a",
            "embedder.kind",
            "unknown value 'bert'",
        ),
        (
            "embedder: identity",
            "embedder: {kind: torchscript}",
            "vendor_a",
            "embedder.path",
            "needs a model path",
        ),
        (
            "embedder: identity",
            "embedder: {kind: identity, device: tpu}",
            "vendor_a",
            "embedder.device",
            "unknown device",
        ),
        (
            "embedder: identity",
            "embedder: {kind: random-projection}",
            "vendor_a",
            "embedder.dim",
            "needs an output dimension",
        ),
        ("name: vendor_b", "name: vendor_a", "vendor_a", "name", "duplicate dataset name"),
        ("name: vendor_b", "name: ../escape", "../escape", "name", "not a safe storage name"),
        ("name: vendor_b", "name: a/b", "a/b", "name", "not a safe storage name"),
        ("name: vendor_b", "name: ''", "datasets[1]", "name", "not a safe storage name"),
        ("{name: vendor_b, ", "{", "datasets[1]", "name", "required field is missing"),
        ("uri: s3://bucket/data/vendor_b, ", "", "vendor_b", "uri", "required field is missing"),
        ("label: y,", "label: y, lable: z,", "vendor_a", "lable", "unknown key 'lable'"),
        ("features: [c1, c2]", "features: []", "vendor_b", "features", "empty list"),
        ("features: [c1, c2]", "features: [c1, c1]", "vendor_b", "features", "duplicate feature"),
        (
            "features: x,",
            "features: x, format: hdf5,",
            "vendor_a",
            "format",
            "unknown value 'hdf5'",
        ),
    ],
)
def test_bad_dataset_fields(old, new, dataset, field, needle):
    assert old in BASE
    with pytest.raises(InputError) as ei:
        load_manifest(BASE.replace(old, new, 1))
    msg = str(ei.value)
    assert msg.startswith(f"dataset {dataset!r}, field {field!r}: "), msg
    assert needle in msg and "; fix: " in msg and "\n" not in msg, msg


@pytest.mark.parametrize(
    "text,field,needle",
    [
        (BASE.replace("pairs: all", "pairs: {target: nope}"), "pairs", "unknown dataset 'nope'"),
        (
            BASE.replace("pairs: all", "pairs: {new: [vendor_a, zz]}"),
            "pairs",
            "unknown dataset 'zz'",
        ),
        (BASE.replace("pairs: all", "pairs: some"), "pairs", "invalid pairs value 'some'"),
        (BASE + "colour: red\n", "colour", "unknown key 'colour'"),
        (
            BASE.replace("budget: 64", "budget: -1"),
            "measures.ot_bounds.budget",
            "whole number from 1 to",
        ),
        (
            BASE.replace("batch_size: 256", "batch_size: abc"),
            "measures.ot_bounds.batch_size",
            "whole number",
        ),
        (
            BASE.replace("budget: 64}", "budget: 64, block_solver: lp}"),
            "measures.ot_bounds.block_solver",
            "unknown value 'lp'",
        ),
        (
            BASE.replace("inner: exact", "inner: fast"),
            "measures.otdd.inner",
            "unknown value 'fast'",
        ),
        (
            BASE.replace("ot_bounds: {batch_size: 256, budget: 64}", "w3: {}"),
            "measures.w3",
            "unknown key 'w3'",
        ),
        (BASE + "thresholds: {foo: 2}\n", "thresholds", "unknown measure 'foo'"),
        (BASE + "thresholds: {w2: 2}\n", "thresholds", "not computed"),
        (BASE + "schedule: every day\n", "schedule", "not a 5-field cron"),
        (BASE.replace("name: nightly-registry", "name: ../up"), "name", "not a safe storage name"),
        (
            BASE.replace("datasets:\n", "datasets:\n  bad: [\n"),
            "manifest",
            "not valid YAML at line 7",
        ),
        ("- a\n- b\n", "manifest", "must be a YAML mapping"),
        (BASE.replace("output: s3://bucket/audits\n", ""), "output", "required field is missing"),
    ],
)
def test_bad_manifest_fields(text, field, needle):
    with pytest.raises(InputError) as ei:
        load_manifest(text)
    msg = str(ei.value)
    assert msg.startswith(f"field {field!r}: "), msg
    assert needle in msg and "; fix: " in msg and "\n" not in msg, msg


def test_no_measure_and_missing_file(tmp_path):
    text = BASE.replace(
        "  otdd: {inner: exact}\n  ot_bounds: {batch_size: 256, budget: 64}\n", "  {}\n"
    )
    with pytest.raises(InputError, match="no measure selected"):
        load_manifest(text)
    with pytest.raises(InputError, match="not found; fix:"):
        load_manifest(tmp_path / "nope.yaml")


def test_sliced_measure_defaults_and_screen():
    text = BASE.replace("  otdd: {inner: exact}\n", "  otdd: {inner: exact}\n  sliced:\n")
    m = load_manifest(text + "screen: {keep: 2}\n")
    s = m.measures.sliced
    assert (s.n_projections, s.n_frames, s.seed) == (256, 4, config.SEED)
    assert (s.lambda_x, s.lambda_y) == (config.LAMBDA_X, config.LAMBDA_Y)
    assert m.measures.selected == ["otdd", "ot_bounds", "sliced"]
    assert (m.screen.keep, m.screen.order) == (2, "nearest")
    m = load_manifest(text + "screen: {keep: 1, order: farthest}\n")
    assert (m.screen.keep, m.screen.order) == (1, "farthest")
    assert load_manifest(text).screen is None  # absent: no screening


_SLICED = BASE.replace("  otdd: {inner: exact}\n", "  otdd: {inner: exact}\n  sliced: {}\n")


@pytest.mark.parametrize(
    "text,field,needle",
    [
        (BASE + "screen: {keep: 2}\n", "screen", "add `sliced: {}` under measures"),
        (_SLICED + "screen: {keep: 0}\n", "screen.keep", "greater than or equal to 1"),
        (_SLICED + "screen: {keep: 1.5}\n", "screen.keep", "valid integer"),
        (_SLICED + "screen:\n", "screen.keep", "required field is missing"),
        (_SLICED + "screen: {keep: 2, order: near}\n", "screen.order", "unknown value 'near'"),
        (_SLICED + "screen: {keep: 2, top: 3}\n", "screen.top", "unknown key 'top'"),
        (
            _SLICED.replace("sliced: {}", "sliced: {n_proj: 8}"),
            "measures.sliced.n_proj",
            "unknown key 'n_proj'",
        ),
        (
            _SLICED.replace("sliced: {}", "sliced: {n_projections: 0}"),
            "measures.sliced.n_projections",
            "whole number from 1 to",
        ),
        (
            BASE.replace(
                "  otdd: {inner: exact}\n  ot_bounds: {batch_size: 256, budget: 64}\n",
                "  sliced: {}\n",
            )
            + "screen: {keep: 2}\n",
            "screen",
            "only `sliced` is selected",
        ),
    ],
)
def test_bad_sliced_and_screen_fields(text, field, needle):
    with pytest.raises(InputError) as ei:
        load_manifest(text)
    msg = str(ei.value)
    assert msg.startswith(f"field {field!r}: "), msg
    assert needle in msg and "; fix: " in msg and "\n" not in msg, msg


def test_yaml_is_safe_loaded():
    with pytest.raises(InputError, match="not valid YAML"):
        load_manifest(BASE + "evil: !!python/object/apply:os.system ['true']\n")


def test_select_pairs():
    m = load_manifest(BASE)
    assert select_pairs(m) == [
        ("vendor_a", "vendor_b"),
        ("vendor_a", "vendor_c"),
        ("vendor_b", "vendor_c"),
    ]
    m = load_manifest(BASE.replace("pairs: all", "pairs: {new: [vendor_c, vendor_b]}"))
    assert select_pairs(m) == [
        ("vendor_a", "vendor_b"),
        ("vendor_a", "vendor_c"),
        ("vendor_b", "vendor_c"),
    ]
    m = load_manifest(BASE.replace("pairs: all", "pairs: {new: [vendor_c]}"))
    assert select_pairs(m) == [("vendor_a", "vendor_c"), ("vendor_b", "vendor_c")]
    m = load_manifest(BASE.replace("pairs: all", "pairs: {target: vendor_a}"))
    assert select_pairs(m) == [("vendor_a", "vendor_b"), ("vendor_a", "vendor_c")]


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("OTAUDIT_DASK_ADDRESS", "tcp://10.0.0.1:8786")
    monkeypatch.setenv("OTAUDIT_CACHE", "false")
    s = config.load_settings()
    assert isinstance(s, config.Settings)
    assert s.dask_address == "tcp://10.0.0.1:8786" and s.cache is False
    assert s.n_workers == 2 and s.threads_per_worker == 1 and s.output == "./otaudit-demo"
    assert config.load_settings(n_workers=4).n_workers == 4


def test_manifest_read_from_s3(s3_bucket):
    from otaudit.data.storage import Store

    bucket, opts = s3_bucket
    Store(f"s3://{bucket}/cfg", opts).write_bytes(BASE.encode(), "audit.yaml")
    m = load_manifest(f"s3://{bucket}/cfg/audit.yaml", storage_options=opts)
    assert m.name == "nightly-registry" and len(m.datasets) == 3
