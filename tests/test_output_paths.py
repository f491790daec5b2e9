"""``litefer predict --out``: never into or around an input, and clear errors (no tracebacks)
for output folders that cannot work; symlink problems in input folders are reported."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from litefer.labels import FER2013
from litefer.pathguard import OutputPathError, check_output_folder, link_problem, make_output_folder

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from litefer.models import create_model
    from litefer.models.checkpoint import ModelMeta, save_safetensors
    torch.manual_seed(0)
    m = create_model("mini_xception", num_classes=7, in_chans=1)
    meta = ModelMeta("mini_xception", list(FER2013), {"channels": 1, "size": 48, "mean": 0.5, "std": 0.5, "crop": "fer"})
    return save_safetensors(tmp_path_factory.mktemp("m") / "tiny.safetensors", meta, m.state_dict())


def predict(ckpt: Path, *args):
    from litefer.cli import app
    return CliRunner().invoke(app, ["predict", *map(str, args), "--no-detect", "--model", str(ckpt)])


def said(r) -> str:
    return " ".join((r.output or "").split())


def clean(r) -> None:
    """Exit 2 with an error line, never a traceback or an escaped exception."""
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)


def photos(root: Path) -> Path:
    d = root / "photos"
    d.mkdir(parents=True)
    shutil.copy(EXAMPLE, d / "a.jpg")
    return d


def files(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))


def test_out_that_contains_the_input_folder_is_refused(ckpt, tmp_path, monkeypatch):
    """`predict photos --out .` used to write photos/a_annotated.jpg into the input folder."""
    d = photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = predict(ckpt, "photos", "--out", ".", "--annotate")
    clean(r)
    assert "contains the input folder" in said(r)
    assert files(d) == ["a.jpg"] and files(tmp_path) == ["photos", "photos/a.jpg"]
    # an ancestor two levels up, given as an absolute path, too
    r = predict(ckpt, d, "--out", tmp_path.parent, "--annotate")
    clean(r)
    assert files(d) == ["a.jpg"]


def test_out_inside_the_input_folder_is_refused(ckpt, tmp_path):
    d = photos(tmp_path)
    for out in (d, d / "results", d / "x" / "y"):
        r = predict(ckpt, d, "--out", out, "--annotate")
        clean(r)
        assert "inside the input folder" in said(r)
    assert files(d) == ["a.jpg"]


def test_out_beside_the_input_still_works(ckpt, tmp_path):
    d = photos(tmp_path)
    r = predict(ckpt, d, "--out", tmp_path / "results", "--annotate")
    assert r.exit_code == 0, r.output
    assert files(tmp_path / "results") == ["photos", "photos/a_annotated.jpg", "predictions.jsonl"]
    assert files(d) == ["a.jpg"]


def test_out_under_a_file(ckpt, tmp_path):
    f = tmp_path / "note.txt"
    f.write_text("a file")
    for out in (f, f / "sub", f / "sub" / "deeper"):
        r = predict(ckpt, EXAMPLE, "--out", out)
        clean(r)
        assert str(f) in said(r) and ("is a file" in said(r) or "not a folder" in said(r))
    assert f.read_text() == "a file"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and /sys are Linux folders")
@pytest.mark.parametrize("out", ["/proc/litefer-out", "/sys/litefer-out", "/proc/self"])
def test_out_in_a_system_folder(ckpt, out):
    r = predict(ckpt, EXAMPLE, "--out", out)
    clean(r)
    assert "system folder" in said(r)
    assert not Path(out).exists() or out == "/proc/self"


def test_out_with_a_folder_named_like_the_results(ckpt, tmp_path):
    out = tmp_path / "o"
    (out / "predictions.jsonl").mkdir(parents=True)
    r = predict(ckpt, EXAMPLE, "--out", out)
    clean(r)
    assert "predictions.jsonl is a folder" in said(r)
    (out / "predictions.csv").mkdir()
    r = predict(ckpt, EXAMPLE, "--out", out, "--format", "csv")
    clean(r)
    assert "predictions.csv is a folder" in said(r)


def test_symlink_loops_in_an_input_folder_are_reported(ckpt, tmp_path):
    d = photos(tmp_path)
    os.symlink("loop.jpg", d / "loop.jpg")           # a link to itself
    (d / "sub").mkdir()
    os.symlink("..", d / "sub" / "up")               # a folder link back to its ancestor
    os.symlink("missing.jpg", d / "gone.jpg")        # a broken link
    r = predict(ckpt, d)
    assert r.exit_code == 0, r.output
    err = " ".join(r.stderr.split())
    assert f"{d / 'loop.jpg'}: symlink loop" in err
    assert f"{d / 'sub' / 'up'}: symlink loop" in err
    assert f"{d / 'gone.jpg'}: broken symlink" in err
    assert r.stdout.count('"path"') == 1  # a.jpg, analysed once


def test_library_helpers(tmp_path):
    d = photos(tmp_path)
    assert check_output_folder(tmp_path / "new" / "deeper", [d]) == (tmp_path / "new" / "deeper").resolve()
    with pytest.raises(OutputPathError, match="is an input file"):
        check_output_folder(d / "a.jpg", [d / "a.jpg"])
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match="part of this path is a file|exists and is not a folder"):
        make_output_folder(blocker / "x")
    assert make_output_folder(tmp_path / "made").is_dir()
    assert link_problem(d / "a.jpg") is None


def test_evaluate_out_errors_are_clear(tmp_path):
    """`litefer evaluate --out` under a file or in /proc: one line, no traceback."""
    from litefer.cli import app
    f = tmp_path / "note.txt"
    f.write_text("a file")
    outs = [f / "sub"] + (["/proc/litefer-eval"] if sys.platform.startswith("linux") else [])
    for out in outs:
        r = CliRunner().invoke(app, ["evaluate", "default", "--dataset", "synthetic", "--split", "test",
                                     "--opt", "n=8", "--opt", "num_classes=8", "--out", str(out)])
        clean(r)
        assert str(out) in said(r)
