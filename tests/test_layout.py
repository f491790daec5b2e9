"""The memory layout of eager inference (litefer.evaluation.layout), for the torch backend and
for evaluation: measured, cached, and never allowed to change the probabilities."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path))
    return tmp_path / "speed"


def _faces(n=4):
    return np.random.default_rng(0).standard_normal((n, 1, 48, 48)).astype(np.float32)


def test_each_layout_gives_the_same_probabilities(cache, one_thread):
    from litefer.deploy.backends import make_backend
    ref = make_backend("torch", "default", memory_format="contiguous")
    cl = make_backend("torch", "default", memory_format="channels_last")
    auto = make_backend("torch", "default")
    assert not ref.channels_last and cl.channels_last and "channels_last" in repr(cl)
    assert auto.layout_reason.startswith("measured: contiguous")
    x = _faces()
    for be in (cl, auto):
        np.testing.assert_allclose(be.predict(x), ref.predict(x), atol=1e-5)
    # the choice was written once and is read back, not measured again
    (entry,) = cache.glob("infer-*.json")
    saved = json.loads(entry.read_text())
    assert saved["channels_last"] is auto.channels_last and saved["model"] == "MiniXception"
    again = make_backend("torch", "default")
    assert again.channels_last is auto.channels_last and again.layout_reason == f"cached measurement ({entry.name})"


def test_a_broken_cache_entry_is_measured_again(cache, one_thread):
    from litefer.evaluation.layout import prefers_channels_last
    from litefer.models import create_model
    m = create_model("mini_xception", num_classes=7).eval()
    use, why = prefers_channels_last(m, (1, 48, 48))
    (entry,) = cache.glob("infer-*.json")
    entry.write_text("{not json")
    use2, why2 = prefers_channels_last(m, (1, 48, 48))
    assert why2.startswith("measured") and json.loads(entry.read_text())["channels_last"] is use2


def test_channels_last_is_refused_when_the_outputs_differ(cache, one_thread, monkeypatch):
    import litefer.evaluation.layout as layout
    from litefer.models import create_model
    monkeypatch.setattr(layout, "PARITY_ATOL", -1.0)      # any difference at all counts as a mismatch
    use, why = layout.prefers_channels_last(create_model("mini_xception", num_classes=7).eval(), (1, 48, 48),
                                            use_cache=False)
    assert use is False and "outputs differ" in why
    assert not list(cache.glob("infer-*.json"))           # use_cache=False writes nothing


def test_unknown_memory_format_is_a_clear_error():
    from litefer.deploy.backends import BackendError, make_backend
    with pytest.raises(BackendError, match="memory_format must be one of auto, channels_last, contiguous"):
        make_backend("torch", "default", memory_format="nhwc")


def test_evaluation_layouts_agree_and_the_model_is_left_as_it_was(cache, one_thread):
    import torch

    from litefer.evaluation.predict import _is_channels_last, predict_proba
    from litefer.models.checkpoint import load_model
    model, meta = load_model("default")
    faces = np.random.default_rng(1).integers(0, 256, (70, 48, 48), dtype=np.uint8)   # 64 + a partial batch
    ref = predict_proba(model, faces, meta.preprocess, memory_format="contiguous")
    for fmt in ("channels_last", "auto"):
        np.testing.assert_allclose(predict_proba(model, faces, meta.preprocess, memory_format=fmt), ref, atol=1e-5)
        assert not _is_channels_last(model)                # restored
    np.testing.assert_allclose(predict_proba(model, faces, meta.preprocess, tta=True, memory_format="channels_last"),
                               predict_proba(model, faces, meta.preprocess, tta=True, memory_format="contiguous"),
                               atol=1e-5)
    model.to(memory_format=torch.channels_last)             # e.g. a model straight from the trainer
    np.testing.assert_allclose(predict_proba(model, faces, meta.preprocess), ref, atol=1e-5)
    assert _is_channels_last(model)
    with pytest.raises(ValueError, match="memory_format must be"):
        predict_proba(model, faces, meta.preprocess, memory_format="nhwc")
