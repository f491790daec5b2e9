"""The bundled default model on real faces: the example photo and scenes composed from FER+.

Clear cases only: the example photo (a smiling astronaut) and FER+ PrivateTest faces on
which at least 9 of 10 annotators agreed.  The scenes are composed at test time from
``$LITEFER_DATA/ferplus`` (never committed) and the test skips, saying why, without it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import EXAMPLE, EXAMPLE_LABEL, REPO, bundled_names, require_bundled_model, require_dataset

CLEAR = ("happy", "surprise", "neutral")   # the classes with enough unanimous test faces


@pytest.fixture(scope="module")
def rec():
    require_bundled_model()
    from litefer.deploy.recognizer import Recognizer
    from litefer.vision.detect import DetectorUnavailable
    try:
        return Recognizer.from_pretrained()
    except DetectorUnavailable as exc:
        pytest.skip(f"no face detector installed ({exc})")


@pytest.fixture(scope="module")
def clear_faces():
    """Per class in CLEAR: FER+ PrivateTest faces with >= 90 % of the votes, in file order."""
    require_dataset("ferplus")
    from litefer.data import load_dataset
    d = load_dataset("ferplus", split="privatetest", label_mode="probability", num_classes=8)
    out = {}
    for lab in CLEAR:
        idx = np.where(d.targets[:, d.labels.index(lab)] >= 0.9)[0]
        assert len(idx) >= 40, f"only {len(idx)} clear {lab} faces"
        out[lab] = d.images[idx]
    return out


def _stated_metrics() -> list[tuple[str, str, dict]]:
    """(bundled name, "<dataset>_<split>", metrics) for every metric set a bundle states."""
    from litefer.models.checkpoint import load_model
    out = []
    for name in bundled_names():
        require_bundled_model(name)
        _, meta = load_model(name)
        for key, m in meta.extra.get("metrics", {}).items():
            out.append((name, key, m))
    return out


def test_bundled_model_metadata_and_size():
    from litefer.models.checkpoint import load_model
    for name in bundled_names():
        path = require_bundled_model(name)
        model, meta = load_model(name)
        assert path.stat().st_size < 5 * 2**20                       # a few MB at most
        assert set(meta.labels) <= {"neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"}
        metrics = meta.extra.get("metrics", {})
        assert metrics, f"bundled {name!r} carries no test metrics"
        for key, m in metrics.items():
            dataset, _, split = key.rpartition("_")
            assert dataset and split, f"bundled {name!r}: metrics key {key!r} is not <dataset>_<split>"
            assert {"n", "accuracy", "macro_f1"} <= set(m), (name, key, m)
        card = _card(name).read_text()
        assert "non-commercial" in card and "PrivateTest" in card and f"`{name}`" in card


def _card(name: str):
    """The model card of a bundled model (scripts/make_bundle.py writes it)."""
    return REPO / "litefer" / "assets" / ("MODEL_CARD.md" if name == "default" else f"MODEL_CARD.{name}.md")


def test_model_card_states_the_bundled_metrics():
    """Each card's headline table is its model's metadata numbers (rounded as printed)."""
    stated = _stated_metrics()
    assert {name for name, _, _ in stated} == set(bundled_names())
    for name, key, m in stated:
        card = _card(name).read_text()
        row = [ln for ln in card.splitlines() if ln.startswith("|") and f"| {m['n']} |" in ln]
        assert row, f"{_card(name).name} has no results row with {m['n']} images ({key})"
        assert f"{100 * m['accuracy']:.2f} %" in row[0] and f"{100 * m['macro_f1']:.2f} %" in row[0], (key, row[0])


@pytest.mark.realdata
@pytest.mark.parametrize("name,key", [(n, k) for n, k, _ in _stated_metrics()])
def test_bundled_metrics_are_reproduced_exactly(name, key):
    """Re-measure each bundled model on each test set its metadata reports: the same number
    of images, the same accuracy and macro-F1 (counts of the same predictions, so exactly)."""
    from litefer.data import load_dataset
    from litefer.evaluation import evaluate
    from litefer.models.checkpoint import load_model
    _, meta = load_model(name)
    stated = meta.extra["metrics"][key]
    dataset, _, split = key.rpartition("_")
    require_dataset(dataset)
    opts = {"label_mode": "majority", "num_classes": len(meta.labels)} if dataset == "ferplus" else {}
    res = evaluate(name, load_dataset(dataset, split=split, **opts), device="cpu")
    got = res.metrics
    assert got["n"] == stated["n"], f"{name} on {key}: {got['n']} images, the bundle states {stated['n']}"
    assert got["accuracy"] == pytest.approx(stated["accuracy"], rel=0, abs=1e-9), (got["accuracy"], stated)
    assert got["macro_f1"] == pytest.approx(stated["macro_f1"], rel=0, abs=1e-9), (got["macro_f1"], stated)
    if "mean_class_acc" in stated:
        assert got["mean_class_acc"] == pytest.approx(stated["mean_class_acc"], rel=0, abs=1e-9)


def test_example_photo_is_one_happy_face(rec):
    faces = rec(str(EXAMPLE))
    assert len(faces) == 1
    f = faces[0]
    assert f.label == EXAMPLE_LABEL and f.score > 0.5, f.probs
    assert f.landmarks is not None and len(f.landmarks) == 5


def test_cli_example_prints_the_happy_face():
    from typer.testing import CliRunner
    from litefer.cli import app
    r = CliRunner().invoke(app, ["predict", "--example"])
    assert r.exit_code == 0, r.output
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert [f["label"] for f in line["faces"]] == [EXAMPLE_LABEL]


@pytest.mark.realdata
def test_clear_crops_without_detection(rec, clear_faces):
    """--no-detect on 40 unanimous crops per class: at least 85 % right, each class >= 75 %."""
    from litefer.deploy.recognizer import Recognizer
    crops = Recognizer(rec.backend, None)
    right, total = 0, 0
    for lab, imgs in clear_faces.items():
        res = crops([np.stack([im] * 3, -1) for im in imgs[:40]])
        got = [faces[0].label for faces in res]
        hits = sum(g == lab for g in got)
        assert hits >= 30, f"{lab}: {hits}/40 right; predicted {got}"
        right, total = right + hits, total + len(got)
    assert right / total >= 0.85


@pytest.mark.realdata
def test_composed_scene_finds_faces_and_reads_them(rec, clear_faces):
    """A 4x3 grid of upscaled FER+ faces on grey: faces found where they are, labels right.

    FER2013 crops cut the chin and forehead, which costs detectors recall, so the test
    asks for at least 10 of the 12 faces, no box outside a cell, and the right label on
    at least 80 % of the found ones."""
    import cv2
    cell, face = 180, 120
    cells, truth = [], []
    for lab in CLEAR:
        for im in clear_faces[lab][:4]:
            c = np.full((cell, cell), 128, np.uint8)
            o = (cell - face) // 2
            c[o:o + face, o:o + face] = cv2.resize(im, (face, face), interpolation=cv2.INTER_CUBIC)
            cells.append(c)
            truth.append(lab)
    grid = np.vstack([np.hstack(cells[r * 4:(r + 1) * 4]) for r in range(3)])
    faces = rec(np.stack([grid] * 3, -1))
    assert 10 <= len(faces) <= 12, [f.box for f in faces]
    seen, right = set(), 0
    for f in faces:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        k = int(cy // cell) * 4 + int(cx // cell)
        assert k not in seen, f"two faces in cell {k}"
        seen.add(k)
        right += f.label == truth[k]
    assert right >= 0.8 * len(faces), f"{right}/{len(faces)} labels right"


@pytest.mark.parametrize("name", bundled_names())
def test_each_bundle_ships_its_own_onnx_export(name):
    """The ONNX file next to each bundled model was exported from exactly its weights (the
    sidecar's sha256) and gives the same probabilities as PyTorch on real-looking crops."""
    require_bundled_model(name)
    from litefer.deploy.onnx_backend import OnnxBackend
    from litefer.deploy.sidecar import bundled_onnx
    from litefer.evaluation.predict import predict_proba
    from litefer.models.checkpoint import load_model
    path = bundled_onnx(name)
    assert path is not None and path.name == f"{name}.onnx", f"{name}: no matching shipped ONNX export"
    model, meta = load_model(name)
    onnx = OnnxBackend(name, threads=1)
    assert onnx.path == path and list(onnx.meta["labels"]) == list(meta.labels)
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(onnx.predict_faces(faces), predict_proba(model, faces, meta.preprocess), atol=1e-4)
