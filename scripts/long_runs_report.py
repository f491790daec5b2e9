"""Regenerate the in-progress long-run sections of docs/results.md (between the
``<!-- long-runs:start -->`` / ``<!-- long-runs:end -->`` markers) from the runs' metrics.csv:
the curve tables, figures, configs and all epochs so far.  The prose is written for the runs'
state when this file was last edited: reread it after each regeneration.

    .venv/bin/python scripts/long_runs_report.py ["STAMP"]   # default stamp: now, UTC
"""
import datetime
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litefer.evaluation.curves import read_curve, curve_table, plot_curves
root = Path(__file__).resolve().parents[1]
im = read_curve(root / "runs/i_mobilenetv2_fer2013_cpu150")
se = read_curve(root / "runs/se_sepnet_fer2013")
stamp = sys.argv[1] if len(sys.argv) > 1 else datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
for c, d in ((im, "fer2013-i_mobilenetv2-150ep"), (se, "fer2013-se_sepnet")):
    out = root / "docs/results" / d
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.csv").write_text(c.path.read_text())
    (out / "config.yaml").write_text((c.path.parent / "config.yaml").read_text())
im_png = plot_curves([im], root / "docs/results/fer2013-i_mobilenetv2-150ep/curves.png",
                     title="i_mobilenetv2, FER2013, the paper's recipe on a 150-epoch cosine schedule (in progress; validation: PublicTest)")
se_png = plot_curves([se], root / "docs/results/fer2013-se_sepnet/curves.png",
                     title="se_sepnet, FER2013, the paper's recipe (in progress; validation: PublicTest)")
b60 = read_curve(root / "docs/results/fer2013-i_mobilenetv2-60ep")
def at(c, e):
    r = next((r for r in c.rows if r["epoch"] == e), None)
    return None if r is None else r["val_acc"]
cmp_e = len(im.rows)
b60_at = at(b60, min(cmp_e, len(b60.rows)))
ib, sb = im.best_row, se.best_row
text = f"""<!-- long-runs:start (regenerated from the runs' metrics.csv) -->
## FER2013, 7 classes: I-MobileNetV2 on a 150-epoch schedule (in progress)

```sh
scripts/long_runs.sh start      # starts, or resumes from runs/i_mobilenetv2_fer2013_cpu150/last.pt
# the same run alone: OMP_NUM_THREADS=1 litefer train configs/i_mobilenetv2_fer2013_cpu150.yaml \\
#                         --out runs/i_mobilenetv2_fer2013_cpu150   (resume: litefer train runs/i_mobilenetv2_fer2013_cpu150)
```

The 60-epoch run above stopped while its curve still rose. This run tests whether a longer
schedule closes the gap: the same model and recipe (`configs/i_mobilenetv2_fer2013_cpu150.yaml`:
SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 32), a cosine learning rate over **150**
epochs (the paper: 350 at a constant rate, which a CPU cannot reach), one thread beside the
SE-SepNet run on the other core. About 3–5 min an epoch (75–200 images/s, depending on what
else ran): some 8–11 hours of training, over several sessions. Selection on PublicTest;
PrivateTest is evaluated once, when the run ends.

As of {stamp}: **epoch {len(im.rows)} of 150, best PublicTest {100 * ib['val_acc']:.2f} % (epoch {ib['epoch']})**,
{im.minutes:.0f} min of training. At the same epoch the 60-epoch run, whose learning rate had
already fallen further, had {100 * b60_at:.2f} %: this run is not ahead yet, and was not expected
to be. With its learning rate still near 0.01 its validation accuracy swung by up to 8 points
between epochs early on and stays within a point or two of its best since; training accuracy
({100 * im.rows[-1]['train_acc']:.2f} % at the last epoch) is level with validation. The gain, if there is
one, has to come in the cosine tail.
All epochs and the config: [`results/fer2013-i_mobilenetv2-150ep/`](results/fer2013-i_mobilenetv2-150ep/).

{curve_table(im, every=2)}
![learning curve so far](results/fer2013-i_mobilenetv2-150ep/curves.png)

## FER2013, 7 classes: SE-SepNet, the paper's recipe (in progress)

```sh
scripts/long_runs.sh start      # starts, or resumes from runs/se_sepnet_fer2013/last.pt
# the same run alone: OMP_NUM_THREADS=1 litefer train configs/se_sepnet_fer2013.yaml --set train.threads=1 \\
#                         --out runs/se_sepnet_fer2013   (resume: litefer train runs/se_sepnet_fer2013)
```

The first SE-SepNet run. `configs/se_sepnet_fer2013.yaml` is the paper's recipe as litefer
reads it ([models.md](models.md)): Adam at Keras' default lr 1e-3, up to 50 epochs with
early stopping (patience 10 on PublicTest accuracy), the learning rate halved after 3
epochs without gain, flip / ±10° / 0.85–1 scale / 10 % translation; batch 64. Training on
Training, selection on PublicTest, PrivateTest once at the end (the paper reports 65.2 % on
a test part of its own 80/20 split). The network (0.77 M parameters, 234 M MACs) is the
slowest of the papers' 48 x 48 models to train: bf16 + channels-last (the trainer's measured choice on
this AVX512-BF16 CPU), 31–53 images/s on one thread, 10–16 min an epoch; 50 epochs would be
about 10 hours.

As of {stamp}: **epoch {len(se.rows)} of at most 50, best PublicTest {100 * sb['val_acc']:.2f} % (epoch {sb['epoch']})**,
{se.minutes:.0f} min of training, still at the initial learning rate (the plateau schedule has not
cut it). Validation accuracy still rises by about a point an epoch, and training accuracy
({100 * se.rows[-1]['train_acc']:.2f} %) is level with it: no overfitting yet, and about 6 points short
of the paper's 65.2 % with most of the 50 epochs to go.
All epochs and the config: [`results/fer2013-se_sepnet/`](results/fer2013-se_sepnet/).

{curve_table(se)}
![learning curve so far](results/fer2013-se_sepnet/curves.png)
<!-- long-runs:end -->
"""
p = root / "docs/results.md"
s = p.read_text()
if "<!-- long-runs:start" in s:
    s = re.sub(r"<!-- long-runs:start.*?<!-- long-runs:end -->\n", lambda m: text, s, flags=re.S)
else:
    anchor = "## FER+, 8 classes: the bundled model (`configs/mini_xception_w2_ferplus_soft_ema.yaml` since 2026-12-02)"
    assert anchor in s
    s = s.replace(anchor, text + "\n" + anchor, 1)
p.write_text(s)
print("ok", len(im.rows), len(se.rows))
