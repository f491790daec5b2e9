"""``litefer predict``: outputs parse, errors are per file, videos round-trip, inputs stay untouched."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from litefer.labels import FER2013
from litefer.vision import create_detector, DetectorUnavailable

from conftest import EXAMPLE, EXAMPLE_LABEL


def _app() -> typer.Typer:
    from litefer.cli.predict import register
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so the command is invoked by name as on the real CLI
        pass

    register(app)
    return app


@pytest.fixture(scope="module")
def app():
    try:
        create_detector("auto")
    except DetectorUnavailable as exc:
        pytest.skip(f"no face detector installed ({exc})")
    return _app()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    import torch
    from litefer.models import create_model
    from litefer.models.checkpoint import ModelMeta, save_safetensors
    torch.manual_seed(0)
    m = create_model("mini_xception", num_classes=7, in_chans=1)
    meta = ModelMeta("mini_xception", list(FER2013), {"channels": 1, "size": 48, "mean": 0.5, "std": 0.5, "crop": "fer"})
    return save_safetensors(tmp_path_factory.mktemp("m") / "tiny.safetensors", meta, m.state_dict())


def run(app, args, ckpt):
    r = CliRunner().invoke(app, ["predict", *map(str, args), "--model", str(ckpt)])
    return r


def said(r) -> str:
    """Everything the command printed, with line wrapping undone."""
    return " ".join(r.output.split())


def lines(r) -> list[dict]:
    return [json.loads(x) for x in r.stdout.splitlines() if x.strip()]


def test_example_json_line(app, ckpt):
    r = run(app, ["--example"], ckpt)
    assert r.exit_code == 0, r.output
    (rec,) = lines(r)
    assert rec["path"].endswith("example.jpg") and len(rec["faces"]) == 1
    f = rec["faces"][0]
    assert set(f) == {"box", "landmarks", "probs", "label", "score"}
    assert len(f["box"]) == 4 and len(f["landmarks"]) == 5 and list(f["probs"]) == list(FER2013)
    assert f["label"] in FER2013 and abs(sum(f["probs"].values()) - 1) < 1e-4


def make_folder(root: Path) -> Path:
    from PIL import Image
    d = root / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLE, d / "person.jpg")
    shutil.copy(EXAMPLE, d / "sub" / "person.jpg")              # same name in another folder
    Image.new("RGB", (64, 48), (128, 128, 128)).save(d / "blank.png")
    (d / "zero.jpg").write_bytes(b"")
    (d / "cut.jpg").write_bytes(EXAMPLE.read_bytes()[:2500])
    (d / "text.png").write_text("not really a png")
    (d / "readme.txt").write_text("ignored: not an image name")
    (d / "clip.mp4").write_bytes(b"a video is analysed only with --out")
    return d


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_folder_with_bad_files_goes_on_and_exits_1(app, ckpt, tmp_path):
    d = make_folder(tmp_path)
    before = snapshot(d)
    r = run(app, [d], ckpt)
    assert r.exit_code == 1
    got = {Path(x["path"]).relative_to(d).as_posix(): x for x in lines(r)}
    assert set(got) == {"person.jpg", "sub/person.jpg", "blank.png"}
    assert len(got["person.jpg"]["faces"]) == 1 and got["blank.png"]["faces"] == []
    err = r.stderr
    assert "zero.jpg" in err and "empty file" in err
    assert "cut.jpg" in err and "text.png" in err and "not an image" in err
    assert "3 input(s) failed" in err and "Traceback" not in r.output
    assert "skipped 1 video file(s)" in err
    assert snapshot(d) == before


def test_csv_output_and_out_folder_with_annotations(app, ckpt, tmp_path):
    d = make_folder(tmp_path)
    before = snapshot(d)
    out = tmp_path / "results"
    r = run(app, [d / "person.jpg", d / "sub", d / "blank.png", "--format", "csv", "--out", out, "--annotate"], ckpt)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [Path(x["path"]).name for x in rows] == ["person.jpg", "person.jpg", "blank.png"]
    assert rows[0]["face"] == "0" and rows[0]["label"] in FER2013
    assert abs(sum(float(rows[0][f"p_{k}"]) for k in FER2013) - 1) < 1e-3
    assert rows[2]["face"] == "" and rows[2]["label"] == ""
    saved = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert saved == rows
    ann = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_annotated.jpg"))
    assert ann == ["blank_annotated.jpg", "person_annotated.jpg", "sub/person_annotated.jpg"]
    from litefer.vision import load_image
    a = load_image(out / "person_annotated.jpg")
    assert a.shape == (512, 512, 3) and not np.array_equal(a, load_image(EXAMPLE))
    assert snapshot(d) == before


def test_output_never_goes_into_an_input_folder(app, ckpt, tmp_path):
    d = make_folder(tmp_path)
    before = snapshot(d)
    for out in (d, d / "results"):
        r = run(app, [d, "--out", out, "--annotate"], ckpt)
        assert r.exit_code == 2 and "inside the input folder" in said(r)
    r = run(app, [d / "person.jpg", "--annotate"], ckpt)
    assert r.exit_code == 2 and "--annotate needs --out" in said(r)
    # an input file given next to the output folder is never overwritten
    out = tmp_path / "o"
    out.mkdir()
    victim = out / "person_annotated.jpg"
    shutil.copy(EXAMPLE, victim)
    r = run(app, [victim, d / "person.jpg", "--out", out, "--annotate"], ckpt)
    assert r.exit_code == 0, r.output
    assert victim.read_bytes() == EXAMPLE.read_bytes()
    assert (out / "person_1_annotated.jpg").is_file() and (out / "person_annotated_annotated.jpg").is_file()
    assert snapshot(d) == before


def make_clip(path: Path, frames: int = 10) -> Path:
    """The example photo panned across a 320x240 window, one step per frame."""
    import cv2
    from litefer.vision import load_image
    img = load_image(EXAMPLE)[:, :, ::-1]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    assert w.isOpened()
    for i in range(frames):
        x = 20 + 8 * i
        w.write(np.ascontiguousarray(img[20:260, x:x + 320]))
    w.release()
    return path


def count_frames(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_round_trip(app, ckpt, tmp_path):
    clip = make_clip(tmp_path / "pan.mp4")
    out = tmp_path / "vout"
    r = run(app, [clip, "--out", out, "--every", "3", "--smooth", "2"], ckpt)
    assert r.exit_code == 0, r.output
    (rec,) = lines(r)
    v = rec["video"]
    assert v["frames"] == 10 and v["processed"] == 4 and v["frames_with_faces"] == 4
    rows = list(csv.DictReader(open(out / "pan.frames.csv", encoding="utf-8")))
    assert [int(x["frame"]) for x in rows] == [0, 3, 6, 9]
    assert {x["track"] for x in rows} == {"0"}                       # one face followed through the pan
    xs = [float(x["x1"]) for x in rows]
    assert xs == sorted(xs, reverse=True) and xs[0] - xs[-1] > 50     # the face moves left as the window pans
    assert abs(sum(float(rows[0][f"p_{k}"]) for k in FER2013) - 1) < 1e-3
    assert count_frames(out / "pan.annotated.mp4") == 10
    assert v["csv"].endswith("pan.frames.csv") and v["video"].endswith("pan.annotated.mp4")


def test_video_needs_out_and_bad_video_is_a_per_file_error(app, ckpt, tmp_path):
    clip = make_clip(tmp_path / "pan.mp4", frames=3)
    r = run(app, [clip], ckpt)
    assert r.exit_code == 2 and "needs --out" in said(r)
    fake = tmp_path / "fake.mp4"
    fake.write_text("no video here")
    r = run(app, [fake, EXAMPLE, "--out", tmp_path / "o"], ckpt)
    assert r.exit_code == 1
    assert "fake.mp4" in r.stderr and len(lines(r)) == 1
    # with --format csv stdout stays one table; the video's summary goes to stderr
    r = run(app, [clip, EXAMPLE, "--out", tmp_path / "o2", "--format", "csv"], ckpt)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [Path(x["path"]).name for x in rows] == ["example.jpg"]
    assert "3 of 3 frame(s) analysed" in " ".join(r.stderr.split())
    assert count_frames(tmp_path / "o2" / "pan.annotated.mp4") == 3


def test_no_detect_and_option_errors(app, ckpt, tmp_path):
    r = run(app, [EXAMPLE, "--no-detect"], ckpt)
    assert r.exit_code == 0, r.output
    (rec,) = lines(r)
    assert rec["faces"][0]["box"] == [0, 0, 512, 512] and rec["faces"][0]["landmarks"] is None
    r = run(app, [EXAMPLE, "--detector", "nope"], ckpt)
    assert r.exit_code == 2 and "unknown detector" in said(r)
    r = run(app, [EXAMPLE, "--format", "xml"], ckpt)
    assert r.exit_code == 2 and "--format" in said(r)
    r = CliRunner().invoke(app, ["predict", str(EXAMPLE), "--model", str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 2 and "missing.safetensors" in said(r)
    r = CliRunner().invoke(app, ["predict", "--model", str(ckpt)])
    assert r.exit_code == 2 and "--example" in said(r)


@pytest.mark.parametrize("detector", ["auto", "mtcnn"])
def test_min_face_reaches_the_detector(app, ckpt, detector):
    """--min-face sets the smallest face searched for: the example's ~100 px face is found
    at 10 px and not at 400 px; detectors without the option, and --no-detect, say so."""
    r = run(app, [EXAMPLE, "--detector", detector, "--min-face", "10"], ckpt)
    assert r.exit_code == 0, r.output
    assert len(lines(r)[0]["faces"]) == 1
    r = run(app, [EXAMPLE, "--detector", detector, "--min-face", "400"], ckpt)
    assert r.exit_code == 0, r.output
    assert lines(r)[0]["faces"] == []


def test_min_face_errors(app, ckpt):
    r = run(app, [EXAMPLE, "--detector", "blazeface", "--min-face", "20"], ckpt)
    assert r.exit_code == 2 and "--min-face applies to the yunet and mtcnn" in said(r)
    r = run(app, [EXAMPLE, "--no-detect", "--min-face", "20"], ckpt)
    assert r.exit_code == 2 and "--min-face needs a face detector" in said(r)


def test_webcam_without_display_is_a_clear_error(app, ckpt, monkeypatch):
    import litefer.cli.predict as pred
    monkeypatch.setattr(pred, "has_display", lambda: False)
    r = run(app, ["--webcam", "0"], ckpt)
    assert r.exit_code == 1 and "needs a display" in said(r) and "Traceback" not in r.output


# ------------------------------------------------------------------ the real model, both backends


def test_onnx_backend_for_real(app, bundled_onnx):
    """`--backend onnx` on the bundled model's real ONNX export: the known answer, and the same
    probabilities as the torch backend on the bundled checkpoint."""
    by_onnx = CliRunner().invoke(app, ["predict", str(EXAMPLE), "--model", str(bundled_onnx), "--backend", "onnx"])
    by_torch = CliRunner().invoke(app, ["predict", str(EXAMPLE), "--model", "default", "--backend", "torch"])
    assert by_onnx.exit_code == 0, by_onnx.output
    assert by_torch.exit_code == 0, by_torch.output
    (o,), (t,) = lines(by_onnx), lines(by_torch)
    assert [f["label"] for f in o["faces"]] == [f["label"] for f in t["faces"]] == [EXAMPLE_LABEL]
    np.testing.assert_allclose(list(o["faces"][0]["probs"].values()), list(t["faces"][0]["probs"].values()),
                               atol=1e-4)
    assert o["faces"][0]["box"] == pytest.approx(t["faces"][0]["box"], abs=1e-3)
    r = CliRunner().invoke(app, ["predict", str(EXAMPLE), "--model", str(bundled_onnx), "--backend", "tflite"])
    assert r.exit_code == 2 and "torch or onnx" in said(r)


# ------------------------------------------------------------------ options: frames, --video, recursion


def test_max_frames_stops_a_video(app, ckpt, tmp_path):
    clip = make_clip(tmp_path / "pan.mp4", frames=10)
    r = run(app, [clip, "--out", tmp_path / "o", "--max-frames", "4"], ckpt)
    assert r.exit_code == 0, r.output
    (rec,) = lines(r)
    assert rec["video"]["processed"] == 4
    rows = list(csv.DictReader(open(tmp_path / "o" / "pan.frames.csv", encoding="utf-8")))
    assert [int(x["frame"]) for x in rows] == [0, 1, 2, 3]
    assert count_frames(tmp_path / "o" / "pan.annotated.mp4") == 4


def test_video_flag_reads_a_file_without_a_video_extension(app, ckpt, tmp_path):
    clip = make_clip(tmp_path / "pan.mp4", frames=3)
    odd = clip.rename(tmp_path / "recording.dat")
    # as an image it is not one: a per-file error
    r = run(app, [odd], ckpt)
    assert r.exit_code == 1 and "recording.dat" in r.stderr and lines(r) == []
    r = run(app, [odd, "--video", "--out", tmp_path / "o"], ckpt)
    assert r.exit_code == 0, r.output
    (rec,) = lines(r)
    assert rec["video"]["frames"] == 3 and rec["video"]["processed"] == 3
    assert (tmp_path / "o" / "recording.frames.csv").is_file()


def test_no_recursive_leaves_sub_folders_out(app, ckpt, tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLE, d / "top.jpg")
    shutil.copy(EXAMPLE, d / "sub" / "deep.jpg")
    r = run(app, [d], ckpt)
    assert r.exit_code == 0, r.output
    assert sorted(Path(x["path"]).name for x in lines(r)) == ["deep.jpg", "top.jpg"]
    r = run(app, [d, "--no-recursive"], ckpt)
    assert r.exit_code == 0, r.output
    assert [Path(x["path"]).name for x in lines(r)] == ["top.jpg"]
