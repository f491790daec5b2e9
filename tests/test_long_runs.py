"""scripts/long_runs.sh: a queue of runs in the background, seen in `status`, stopped with a
checkpoint, resumed to the end, then the next run: the loop the project's multi-session CPU runs live on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "long_runs.sh"
LITEFER = Path(sys.executable).parent / "litefer"


def _sh(*args, env):
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait(pred, seconds=240.0):
    t0 = time.time()
    while time.time() - t0 < seconds:
        if pred():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not LITEFER.is_file(), reason=f"needs the litefer entry point next to {sys.executable}")
def test_start_status_stop_resume(tmp_path):
    def config(name, n_train):
        path = tmp_path / name
        path.write_text(f"""
data: {{dataset: synthetic, num_classes: 3, val_split: val, test_split: null,
       options: {{n_train: {n_train}, n_val: 32, size: 24}}}}
model: {{arch: mini_xception, input_size: 24}}
optim: {{name: adam, lr: 0.001}}
train: {{epochs: 1, batch_size: 8, checkpoint_minutes: 10, progress: false, tensorboard: false, autotune: false}}
""")
        return path
    # t must still be running after two stops: 20,000 images is ~20 s of one thread on a fast
    # (AVX-512) CPU, where 3,000 (~3 s) once finished before the first stop came; u only has to finish
    cfg, cfg_u = config("t.yaml", 20000), config("u.yaml", 3000)
    runs = tmp_path / "runs"
    env = {**os.environ, "LITEFER": str(LITEFER), "LONG_RUNS_DIR": str(runs), "RUNS": f"t={cfg} u={cfg_u}",
           "THREADS": "1"}
    bad = _sh("start", env={**env, "RUNS": f"t={cfg} u={tmp_path / 'missing.yaml'}"})
    assert bad.returncode == 2 and "missing.yaml not found" in bad.stderr and not runs.exists()  # checked first
    assert _sh("bogus", env=env).returncode == 2
    assert _sh("start", env={**env, "THREADS": "0"}).returncode == 2

    r = _sh("start", env={**env, "BUDGET": "3h"})            # a run that starts is sized to the budget
    assert r.returncode == 0, r.stderr
    assert "t: starting on 1 threads (3h budget)" in r.stdout and "u: queued, then starting" in r.stdout
    run, run_u = runs / "t", runs / "u"
    try:
        assert _wait(lambda: _status(run).get("state") == "running", 120), (runs / "t.log").read_text()
        time.sleep(2)                                                       # some steps in
        assert "already running" in _sh("start", env=env).stdout          # never a second queue
        st = _sh("status", env=env)
        assert st.returncode == 0 and any(ln.split()[:1] == ["t"] and "running" in ln for ln in st.stdout.splitlines())
        assert "queue: running" in st.stdout
        stop = _sh("stop", env=env)
        assert stop.returncode == 0 and "SIGTERM" in stop.stdout
        s = _status(run)
        assert s["state"] == "stopped" and (run / "last.pt").is_file()       # checkpointed mid-run
        assert not run_u.exists()                                           # the queue stopped with it
        assert "queue: not running" in _sh("status", env=env).stdout

        r = _sh("start", env=env)                                            # the run itself gets SIGTERM
        assert "t: resuming" in r.stdout and "u: queued, then starting" in r.stdout
        assert _wait(lambda: _status(run).get("state") == "running", 120)
        subprocess.run(["pkill", "-TERM", "-f", f"litefer train {run}"], check=True)
        assert _wait(lambda: "queue: not running" in _sh("status", env=env).stdout, 120)
        assert _status(run)["state"] == "stopped" and not run_u.exists()    # checkpointed; queue did not go on
        assert "t was stopped by a signal" in (runs / "long_runs.log").read_text()

        r = _sh("start", env=env)
        assert "t: resuming" in r.stdout
        assert _wait(lambda: _status(run_u).get("state") == "finished"), (runs / "long_runs.log").read_text()
        assert _status(run).get("state") == "finished"
        assert _wait(lambda: "queue: not running" in _sh("status", env=env).stdout, 60)   # the queue ends
        log = (runs / "t.log").read_text()
        assert "resumed from" in log and json.loads((run / "result.json").read_text())["epochs_run"] == 1
        assert "budget: 1 epoch (the config's maximum) to fit 3h00m" in log
        assert "budget_hours: null" in (run / "config.yaml").read_text()
        qlog = (runs / "long_runs.log").read_text().splitlines()             # one after the other
        t_done = next(i for i, ln in enumerate(qlog) if ln.endswith("t: exit 0"))
        u_start = next(i for i, ln in enumerate(qlog) if " u: litefer train " in ln)
        assert t_done < u_start, qlog
        assert "nothing to run" in _sh("start", env=env).stdout              # finished runs are skipped
    finally:
        _sh("stop", env=env)
