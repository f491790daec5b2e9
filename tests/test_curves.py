"""Learning curves (litefer.evaluation.curves): a real run's metrics.csv shipped in docs/,
and clear errors for files that are not one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from litefer.evaluation.curves import CurveError, curve_table, pick_epochs, read_curve

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "docs" / "results" / "fer2013-i_mobilenetv2-60ep"      # metrics.csv + result.json of a CPU run

HEADER = "epoch,lr,train_loss,train_acc,val_loss,val_acc,best,time_s\n"


def test_a_shipped_run_reads_as_its_result_says():
    result = json.loads((RUN / "result.json").read_text())
    c = read_curve(RUN)
    assert len(c.rows) == result["epochs_run"] and c.best_epoch == result["best_epoch"]
    assert c.best_row["val_acc"] == pytest.approx(result["best_value"])
    epochs = pick_epochs(c, every=10)
    assert epochs[0] == 1 and epochs[-1] == len(c.rows) and all(e % 10 == 0 for e in epochs[1:-1])
    assert c.best_epoch in epochs
    assert f"**{100 * result['best_value']:.2f} %**" in curve_table(c, every=10)


def test_default_rows_are_few_and_keep_best_and_last(tmp_path):
    body = "".join(f"{e},0.01,1.0,0.5,1.0,{0.9 if e == 37 else 0.5},{str(e in (1, 37)).lower()},60\n"
                   for e in range(1, 101))
    (tmp_path / "metrics.csv").write_text(HEADER + body)
    c = read_curve(tmp_path)
    assert c.best_epoch == 37 and c.minutes == pytest.approx(100.0)
    epochs = pick_epochs(c)
    assert {1, 37, 100} <= set(epochs) and len(epochs) <= 18


@pytest.mark.parametrize("text,match", [
    ("", "missing column"),
    ("epoch,loss\n1,2\n", "missing column"),
    (HEADER, "no epochs yet"),
    (HEADER + "1,0.01,1.0,0.5,1.0,abc,true,60\n", r"metrics.csv:2: field 'val_acc': 'abc' is not a number"),
    (HEADER + "1,0.01,1.0,0.5,1.0,0.4,true,60\n2,0.01,1.0,0.5,1.0,0.4,maybe,60\n", r":3: field 'best'"),
    (HEADER + "1,0.01,1.0,0.5,1.0,0.4,true\n", r":2: 8 columns expected"),
    (HEADER + "1.5,0.01,1.0,0.5,1.0,0.4,true,60\n", r":2: field 'epoch'"),
    (HEADER + "2,0.01,1.0,0.5,1.0,0.4,true,60\n2,0.01,1.0,0.5,1.0,0.4,true,60\n", r":3: epoch 2 does not follow"),
])
def test_bad_metrics_files_name_file_line_and_field(tmp_path, text, match):
    (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(CurveError, match=match):
        read_curve(tmp_path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(CurveError, match="is it a run folder"):
        read_curve(tmp_path)
    (tmp_path / "metrics.csv").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(CurveError, match="not a text file|missing column"):
        read_curve(tmp_path)
