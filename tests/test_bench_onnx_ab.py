"""benchmarks/bench_onnx_ab.py: interleaved A/B timing of ONNX exports, on the shipped files
(tiny round counts: this checks what the script reports, not how fast anything is)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
bench = pytest.importorskip("bench_onnx_ab")
ASSETS = REPO / "litefer" / "assets"


def test_same_export_twice_agrees_and_reports_a_ratio(tmp_path, capsys):
    out = tmp_path / "ab.json"
    f = str(ASSETS / "default.onnx")
    assert bench.main([f, f, "--rounds", "2", "--calls", "2", "--warmup", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["file"] for r in rows] == [f, f]
    assert rows[0]["speedup_vs_first"] == 1.0                 # the first file against itself
    assert rows[1]["speedup_vs_first"] > 0 and rows[1]["max_abs_prob_diff_vs_first"] == 0.0
    assert all(r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] for r in rows)
    text = capsys.readouterr().out
    assert "speed-up vs first" in text and "disagree" not in text


def test_two_different_models_are_flagged(capsys):
    # both take 1x48x48 faces, but 8 vs 7 classes: not two exports of one model
    rc = bench.main([str(ASSETS / "default.onnx"), str(ASSETS / "fer2013.onnx"), "--rounds", "1", "--calls", "1",
                     "--warmup", "0"])
    assert rc == 0
    assert "disagree with" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main([str(ASSETS / "default.onnx")])
    assert e.value.code == 2 and "at least two" in capsys.readouterr().err
    assert bench.main([str(ASSETS / "default.onnx"), str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err
