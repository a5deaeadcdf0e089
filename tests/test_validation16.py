"""Input validation up front (issue 16 items 6, 8, 10; issue 17 item 3): the whole manifest
(every measure option) before any dataset is read, YAML duplicate keys and aliases, preflight
from Parquet footers before any server starts, credentials in URIs redacted, storage options
scoped to their backend, and the smaller messages (float32 overflow, header-only CSV, the
right dataset named when two share a file).

Real parts: real files on disk, moto's S3 server, the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from otaudit import config
from otaudit.audit.preflight import check_preflight, preflight
from otaudit.data.manifest import load_manifest
from otaudit.data.parquet import write_dataset_parquet
from otaudit.data.readers import probe_dataset, read_dataset
from otaudit.data.secrets import redact_uri, scoped_options
from otaudit.errors import InputError, StorageError

HEAD = (
    "name: v16\noutput: /tmp/v16-out\ndatasets:\n"
    "  - {name: a, uri: /tmp/a.parquet}\n  - {name: b, uri: /tmp/b.parquet}\nmeasures:\n"
)
CLI = [str(Path(sys.executable).parent / "otaudit")]


def _one_line(msg: str) -> None:
    assert "\n" not in msg and "; fix: " in msg, msg


# --- 1. the whole manifest, every measure option --------------------------------------


@pytest.mark.parametrize(
    "measures, field, needle",
    [
        ("  w2: {foo: 1}\n", "measures.w2.foo", "unknown option 'foo'"),
        ("  w2: {solver: bogus}\n", "measures.w2.solver", "unknown value 'bogus'"),
        ("  w2: {solver: exact, batch_size: 8}\n", "measures.w2.batch_size", "does not apply"),
        ("  ot_bounds: {partition: bogus}\n", "measures.ot_bounds.partition", "aligned, random"),
        ("  ot_bounds: {coupling: nope}\n", "measures.ot_bounds.coupling", "unknown value"),
        ("  otdd: {lambda_x: .inf}\n", "measures.otdd.lambda_x", "finite"),
        ("  otdd: {lambda_y: .nan}\n", "measures.otdd.lambda_y", "finite"),
        ("  sliced: {lambda_x: .inf}\n", "measures.sliced.lambda_x", "finite"),
        ("  sliced: {n_projections: 1e9}\n", "measures.sliced.n_projections", "16384"),
        ("  sliced: {n_projections: 1000000000}\n", "measures.sliced.n_projections", "16384"),
        ("  sliced: {n_frames: 100000}\n", "measures.sliced.n_frames", "256"),
        ("  ot_bounds: {batch_size: 10000000}\n", "measures.ot_bounds.batch_size", "65536"),
        ("  otdd: {options: {foo: 1}}\n", "measures.otdd.options.foo", "valid: batch_size"),
        (
            "  otdd: {solver: exact, options: {batch_size: 3}}\n",
            "measures.otdd.options.batch_size",
            "does not apply to solver 'exact'",
        ),
        (
            "  otdd: {options: {target_gap: .inf}}\n",
            "measures.otdd.options.target_gap",
            "finite",
        ),
        (
            "  otdd: {options: {inner_options: {solver: sinkhorn, options: {reg: -1}}}}\n",
            "measures.otdd.options.inner_options.options.reg",
            ">= 0",
        ),
        ("  otdd: {options: {partition: bogus}}\n", "measures.otdd.options.partition", "bogus"),
        ("  otdd: {}\nexplain: {options: {foo: 2}}\n", "explain.options.foo", "unknown"),
        ("  otdd: {}\nexplain: {steps: 1000000}\n", "explain.steps", "10000"),
        ("  otdd: {}\nthresholds: {otdd: '1.5'}\n", "thresholds", "without quotes"),
        ("  otdd: {}\nthresholds: {otdd: true}\n", "thresholds", "got True"),
        ("  otdd: {}\nshard_rows: 1e12\n", "shard_rows", "whole number"),
    ],
)
def test_every_measure_option_is_validated_up_front(measures, field, needle):
    t0 = time.perf_counter()
    with pytest.raises(InputError) as ei:
        load_manifest(HEAD + measures)
    elapsed = time.perf_counter() - t0
    msg = str(ei.value)
    _one_line(msg)
    assert msg.startswith(f"field {field!r}: "), msg
    assert needle in msg, msg
    assert elapsed < 2.0, elapsed  # validation only (the files do not exist: nothing read)


def test_valid_options_still_load_with_their_params_unchanged():
    m = load_manifest(
        HEAD
        + "  otdd: {solver: minibatch, options: {batch_size: 64, budget: 8, target_gap: 0.05}}\n"
        "  w2: {solver: minibatch, batch_size: 32, partition: random}\n"
        "  ot_bounds: {batch_size: 16, budget: 4, coupling: diagonal, seed: 3}\n"
        "  sliced: {n_projections: 64, n_frames: 2}\n"
        "thresholds: {otdd: 1, w2: 2.5}\n"
    )
    # the w2 mapping is passed to solve_ot as written (its cache key part must not change)
    assert m.measures.w2 == {"solver": "minibatch", "batch_size": 32, "partition": "random"}
    assert m.measures.otdd.options == {"batch_size": 64, "budget": 8, "target_gap": 0.05}
    assert m.thresholds == {"otdd": 1.0, "w2": 2.5}


def test_duplicate_yaml_keys_are_refused_with_both_lines():
    text = HEAD + "  otdd: {}\n  otdd: {inner: gaussian}\n"
    with pytest.raises(InputError) as ei:
        load_manifest(text)
    msg = str(ei.value)
    _one_line(msg)
    assert "repeats the key 'otdd' at line 8 (first at line 7)" in msg, msg
    nested = HEAD.replace("uri: /tmp/a.parquet}", "uri: /tmp/a.parquet, uri: /tmp/c}")
    with pytest.raises(InputError, match="repeats the key 'uri'"):
        load_manifest(nested + "  otdd: {}\n")
    # merge keys are not duplicates
    m = load_manifest(HEAD + "  ot_bounds: &b {batch_size: 16}\n  w2:\n    <<: *b\n")
    assert m.measures.w2 == {"batch_size": 16}


def test_billion_laughs_fails_fast_in_small_memory(tmp_path):
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    p = tmp_path / "laughs.yaml"
    p.write_text(HEAD + "  otdd: {}\n" + "\n".join(levels) + "\n")  # 9**9 ~ 3.9e8 nodes
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError) as ei:
        load_manifest(p)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _one_line(str(ei.value))
    assert "YAML" in str(ei.value)
    assert elapsed < 1.0, elapsed  # 67 s before (shared 2-core machine: generous)
    assert peak < 20 * 2**20, peak  # 1.3 GB before
    many = HEAD + "  otdd: &o {}\n" + "".join(f"x{i}: *o\n" for i in range(150))
    with pytest.raises(InputError, match=f"more than {config.YAML_MAX_ALIASES} YAML aliases"):
        load_manifest(many)


@pytest.mark.slow  # the CLI's import time (torch; issue 17.2) on a shared machine
def test_typo_through_the_real_cli_is_one_line_on_stderr_before_any_server(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: typo\noutput: {tmp_path / 'out'}\ndatasets:\n"
        f"  - {{name: a, uri: {tmp_path / 'a.parquet'}}}\n"
        f"  - {{name: b, uri: {tmp_path / 'b.parquet'}}}\n"
        "measures:\n  w2: {foo: 1}\n"
    )
    t0 = time.perf_counter()
    r = subprocess.run([*CLI, "audit", str(bad)], capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "measures.w2.foo" in lines[0] and "valid: batch_size" in lines[0], lines
    assert not (tmp_path / "out").exists()  # nothing written: no server, no cluster
    print(f"CLI typo wall time {wall:.1f} s (imports included; shared machine)")


# --- 2. preflight ----------------------------------------------------------------------


@pytest.fixture
def lake(tmp_path):
    rng = np.random.default_rng(0)
    for name, d in (("digits", 64), ("digits2", 64), ("iris", 4)):
        write_dataset_parquet(str(tmp_path), name, rng.normal(size=(30, d)), rng.integers(0, 3, 30))
    return tmp_path


def _manifest(root: Path, entries: str, measures: str = "  otdd: {}\n") -> Path:
    p = root / "m.yaml"
    p.write_text(f"name: pf\noutput: {root / 'out'}\ndatasets:\n{entries}measures:\n{measures}")
    return p


def _ds(name: str, uri: str, extra: str = "") -> str:
    return f"  - {{name: {name}, uri: '{uri}', features: features, label: label{extra}}}\n"


def test_preflight_reads_dims_from_footers_and_fails_only_mismatched_pairs(lake):
    m = load_manifest(
        _manifest(
            lake,
            _ds("digits", "digits.parquet")
            + _ds("digits2", "digits2.parquet")
            + _ds("iris", "iris.parquet")
            + _ds("gone", "missing.parquet")
            + _ds("typo", "iris.parquet").replace("features: features", "features: pixels"),
        )
    )
    pf = check_preflight(m)  # digits-digits2 is computable: no raise
    assert pf.input_dims["digits"] == 64 and pf.input_dims["iris"] == 4
    assert pf.computable == [("digits", "digits2")]
    assert "'digits' has d=64, 'iris' has d=4" in pf.bad_pairs[("digits", "iris")]
    assert set(pf.problems) == {"gone", "typo"}
    assert "not found" in pf.problems["gone"]
    assert "pixels" in pf.problems["typo"] and "field 'features'" in pf.problems["typo"]
    for line in pf.warnings():
        assert "\n" not in line


def test_preflight_declared_embedder_dims(lake):
    m = load_manifest(
        _manifest(
            lake,
            _ds("digits", "digits.parquet", ", embedder: {kind: random-projection, dim: 4}")
            + _ds("iris", "iris.parquet"),
        )
    )
    assert preflight(m).computable == [("digits", "iris")]  # 64 -> 4 matches iris's 4
    m2 = load_manifest(
        _manifest(
            lake,
            _ds("iris", "iris.parquet", ", embedder: {kind: pca, dim: 8}")
            + _ds("digits", "digits.parquet"),
        )
    )
    with pytest.raises(InputError, match="PCA dim 8 exceeds the feature dimension 4"):
        check_preflight(m2)


@pytest.mark.slow  # the CLI's import time (torch; issue 17.2) on a shared machine
def test_cli_digits_with_iris_exits_1_with_the_reason_before_embedding(lake):
    p = _manifest(lake, _ds("digits", "digits.parquet") + _ds("iris", "iris.parquet"))
    r = subprocess.run([*CLI, "audit", str(p)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "'digits' has d=64, 'iris' has d=4" in lines[0], lines
    assert not (lake / "out").exists()  # no report, no cache: nothing was embedded


# --- 3. secrets ------------------------------------------------------------------------

SECRET = "S3cr3tS1gnature"


@pytest.mark.parametrize(
    "uri",
    [
        f"https://b.s3.amazonaws.com/k.parquet?X-Amz-Algorithm=AWS4&X-Amz-Credential={SECRET}"
        f"&X-Amz-Signature={SECRET}&X-Amz-Security-Token={SECRET}",
        f"https://acc.blob.core.windows.net/c/f.parquet?sv=2022&se={SECRET}&sp=r&sig={SECRET}",
        f"https://h/f.csv?AWSAccessKeyId={SECRET}&Signature={SECRET}&Expires=1",
        f"https://h/f.csv?token={SECRET}&code={SECRET}",
        f"s3://user:{SECRET}@bucket/key.parquet",
    ],
)
def test_redact_uri_masks_query_credentials(uri):
    out = redact_uri(uri)
    assert SECRET not in out and "***" in out
    assert redact_uri(out) == out  # idempotent
    assert redact_uri(f"dataset 'x', field 'uri': storage {uri!r} not found").count(SECRET) == 0


@pytest.mark.slow  # the CLI's import time (torch; issue 17.2) on a shared machine
def test_presigned_uri_never_reaches_errors_stderr_or_report_rows(tmp_path):
    from otaudit.audit.prepare import DatasetFailure, failed_dataset_row
    from otaudit.audit.report import failed_pair_row

    uri = f"{tmp_path}/gone.parquet?X-Amz-Credential={SECRET}&sig={SECRET}"
    m = load_manifest(_manifest(tmp_path, _ds("a", uri) + _ds("b", uri)))
    with pytest.raises(StorageError) as ei:
        probe_dataset(m.datasets[0])
    assert SECRET not in str(ei.value)
    row = failed_dataset_row("r", m.datasets[0], DatasetFailure(name="a", error=f"x {uri}"))
    assert SECRET not in json.dumps(row)
    prow = failed_pair_row(run_id="r", dataset_a="a", dataset_b="b", measure="otdd",
                           error=f"boom at {uri}", code_version="v")  # fmt: skip
    assert SECRET not in json.dumps(prow, default=str)
    assert SECRET not in json.dumps(m.redacted())
    r = subprocess.run(
        [*CLI, "audit", str(tmp_path / "m.yaml")], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1 and SECRET not in r.stderr + r.stdout, r.stderr
    assert "not found" in r.stderr


def test_storage_options_are_scoped_to_their_backend(tmp_path):
    flat = (
        "name: so\noutput: s3://bucket/out\nstorage_options: {key: K, secret: S}\ndatasets:\n"
        "  - {name: a, uri: s3://bucket/a.parquet}\n  - {name: l, uri: /tmp/l.parquet}\n"
        "  - {name: o, uri: s3://bucket/o.parquet, storage_options: {key: K2}}\n"
    )
    m = load_manifest(flat)
    assert m.dataset_storage_options("a") == {"key": "K", "secret": "S"}
    assert m.dataset_storage_options("l") == {}  # s3 keys never to a local file
    assert m.dataset_storage_options("o") == {"key": "K2", "secret": "S"}  # own override
    assert m.output_storage_options() == {"key": "K", "secret": "S"}
    mixed = flat.replace("uri: /tmp/l.parquet", "uri: gs://other/l.parquet")
    with pytest.raises(InputError, match="key them by protocol") as ei:
        load_manifest(mixed)
    _one_line(str(ei.value))
    keyed = mixed.replace("{key: K, secret: S}", "{s3: {key: K}, gcs: {token: T}}")
    mk = load_manifest(keyed)
    assert mk.dataset_storage_options("a") == {"key": "K"}
    assert mk.dataset_storage_options("l") == {"token": "T"}  # gs only gets gs's
    assert scoped_options({"s3": {"key": "K"}}, "az://c/f") == {}


def test_scoped_options_reach_a_real_s3_dataset_and_not_a_local_one(s3_bucket, tmp_path):
    bucket, so = s3_bucket
    rng = np.random.default_rng(1)
    write_dataset_parquet(f"s3://{bucket}/d", "r", rng.normal(size=(20, 3)), storage_options=so)
    write_dataset_parquet(str(tmp_path), "l", rng.normal(size=(20, 3)))
    p = tmp_path / "s3.yaml"
    p.write_text(
        f"name: s3so\noutput: {tmp_path / 'out'}\nstorage_options: {json.dumps(so)}\n"
        f"datasets:\n  - {{name: r, uri: 's3://{bucket}/d/r.parquet', features: features}}\n"
        f"  - {{name: l, uri: '{tmp_path / 'l.parquet'}', features: features}}\n"
    )
    m = load_manifest(p)
    assert m.dataset_storage_options("l") == {}
    pf = check_preflight(m)
    assert pf.input_dims == {"r": 3, "l": 3} and pf.computable == [("r", "l")]


# --- 4. smaller messages ---------------------------------------------------------------


def test_float32_overflow_is_called_overflow(tmp_path):
    X = np.ones((6, 2))
    X[4, 1] = 1e39
    np.save(tmp_path / "big.npy", X)
    m = load_manifest(_manifest(tmp_path, f"  - {{name: big, uri: {tmp_path / 'big.npy'}}}\n"))
    with pytest.raises(InputError) as ei:
        read_dataset(m.datasets[0])
    msg = str(ei.value)
    _one_line(msg)
    assert "float32 range" in msg and "row 4" in msg and "NaN" not in msg, msg


def test_header_only_csv_says_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,label\n")
    m = load_manifest(
        _manifest(
            tmp_path,
            f"  - {{name: hdr, uri: {tmp_path / 'h.csv'}, features: [a, b], label: label}}\n",
        )
    )
    with pytest.raises(InputError) as ei:
        read_dataset(m.datasets[0])
    msg = str(ei.value)
    assert "no rows" in msg and "null" not in msg and msg.startswith("dataset 'hdr'"), msg


def test_two_datasets_sharing_a_file_are_named_right(tmp_path):
    """The cache holds one statistics entry for both; each pair names the dataset it asked for."""
    from otaudit.audit.measures import Loader
    from otaudit.audit.prepare import DatasetRef
    from otaudit.data.cache import Cache
    from otaudit.data.storage import Store
    from otaudit.dataset_distance import dataset_stats

    rng = np.random.default_rng(2)
    stats = dataset_stats(rng.normal(size=(12, 3)), rng.integers(0, 2, 12), name="first")
    cache = Cache(Store(str(tmp_path)))
    cache.put_arrays("stats", "ab" * 16, stats.to_arrays())
    import torch

    load = Loader(None, cache, torch.device("cpu"))
    fields = dict(uri="u", fingerprint="f", embedder="identity", n_rows=12, n_classes=2, dim=3,
                  labeled=True, emb_key="cd" * 16, stats_key="ab" * 16, cache_hit=True,
                  read_seconds=0, embed_seconds=0, stats_seconds=0, seconds=0)  # fmt: skip
    assert load("stats", DatasetRef(name="second", **fields)).name == "second"
    assert load("stats", DatasetRef(name="first", **fields)).name == "first"


@pytest.mark.skipif(os.environ.get("OTAUDIT_SKIP_IMPORT_CHECK") == "1", reason="opt-out")
def test_validation_modules_import_no_torch_or_prefect_of_their_own():
    """The validation code's own imports (the package root's are term17's, issue 17.2)."""
    for mod in ("validation", "manifest", "secrets", "spec_base", "embedder_spec"):
        src = (Path(__file__).parents[1] / "lib" / "data" / f"{mod}.py").read_text()
        for bad in ("import torch", "from torch", "import prefect", "from prefect"):
            assert bad not in src, (mod, bad)
