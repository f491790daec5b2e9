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


def _run(folder: Path, n_epochs: int, best: int, init_from: str | None = None) -> Path:
    """A run folder: metrics.csv with ``best`` flagged at ``best``, config.yaml, best.pt."""
    folder.mkdir(parents=True)
    body = "".join(f"{e},0.01,1.0,0.5,1.0,{0.5 + e / 1000},{str(e == best).lower()},60\n"
                   for e in range(1, n_epochs + 1))
    (folder / "metrics.csv").write_text(HEADER + body)
    model = f"model: {{arch: tiny, init_from: {init_from}}}\n" if init_from else "model: {arch: tiny}\n"
    (folder / "config.yaml").write_text(model)
    (folder / "best.pt").write_bytes(b"weights")
    return folder


def test_stages_follow_init_from_back_to_the_first_run(tmp_path):
    from litefer.evaluation.curves import plot_curves, read_stages
    s1 = _run(tmp_path / "s1", 32, best=29)
    s2 = _run(tmp_path / "s2", 20, best=15, init_from=str(s1 / "best.pt"))
    s3 = _run(tmp_path / "s3", 5, best=5, init_from=str(s2 / "best.pt"))
    chain = read_stages(s3)
    assert [c.name for c in chain] == ["s1", "s2", "s3"]
    assert [c.offset for c in chain] == [0, 29, 29 + 15]            # each starts after its parent's best
    assert chain[2].parent is chain[1] and chain[1].parent is chain[0] and chain[0].parent is None
    table = curve_table(chain[2])
    assert "epoch (all stages)" in table and "| 45 | 1 |" in table and "| 49 | 5 |" in table
    assert "all stages" not in curve_table(chain[0])
    png = plot_curves(chain, tmp_path / "stages.png")
    assert png.stat().st_size > 10_000
    # a plain run, and a run started from weights that are not a run's best.pt, are one stage
    assert [c.offset for c in read_stages(s1)] == [0]
    (tmp_path / "imagenet.safetensors").write_bytes(b"x")
    user = _run(tmp_path / "u", 3, best=2, init_from=str(tmp_path / "imagenet.safetensors"))
    assert [c.name for c in read_stages(user)] == ["u"]


def test_stage_errors_name_the_file(tmp_path):
    from litefer.evaluation.curves import read_stages
    a = tmp_path / "a"
    b = _run(tmp_path / "b", 3, best=2, init_from=str(a / "best.pt"))
    _run(a, 3, best=1, init_from=str(b / "best.pt"))
    with pytest.raises(CurveError, match="loop"):
        read_stages(b)
    c = tmp_path / "c"
    _run(c, 3, best=0)                                                # no epoch flagged best
    d = _run(tmp_path / "d", 2, best=1, init_from=str(c / "best.pt"))
    with pytest.raises(CurveError, match=r"c/metrics.csv: no epoch flagged best"):
        read_stages(d)
    gone = _run(tmp_path / "gone", 2, best=1, init_from=str(tmp_path / "deleted" / "best.pt"))
    with pytest.raises(CurveError, match=r"gone/config.yaml: model.init_from .*deleted/best.pt: no such folder"):
        read_stages(gone)
    e = _run(tmp_path / "e", 2, best=1)
    (e / "config.yaml").write_text("model: {init_from: [1, 2]}\n")
    with pytest.raises(CurveError, match=r"e/config.yaml: field 'model.init_from'"):
        read_stages(e)


def test_cli_curves_stages(tmp_path):
    from typer.testing import CliRunner
    from litefer.cli import app
    s1 = _run(tmp_path / "s1", 10, best=8)
    s2 = _run(tmp_path / "s2", 4, best=3, init_from=str(s1 / "best.pt"))
    r = CliRunner().invoke(app, ["curves", str(s2), "--stages", "--plot", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    assert "## s1" in r.stdout and "## s2" in r.stdout and "epoch 9 of all stages" in r.stdout
    plain = CliRunner().invoke(app, ["curves", str(s2)])
    assert plain.exit_code == 0 and "## s1" not in plain.stdout and "all stages" not in plain.stdout
