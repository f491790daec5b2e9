#!/usr/bin/env bash
# The project's long CPU training runs, one process per core, started or resumed in the
# background; each writes runs/<name>/ (last.pt every 10 min and on SIGTERM) and
# runs/<name>.log. Run it from anywhere; paths are relative to the repository.
#
#   scripts/long_runs.sh start    # start each run, or resume it from runs/<name>/last.pt
#   scripts/long_runs.sh status   # litefer runs, the long runs only
#   scripts/long_runs.sh stop     # SIGTERM: each run checkpoints and exits; waits for them
#
# BUDGET=2h30m sizes each run that starts (not one that resumes) to that wall time
# (`litefer train --budget`: epochs measured to fit, so a run ends before the session does).
# RUNS="name=config ..." replaces the list below (one entry per core at most: the machine
# has 2; a third job makes every run and every timing slower); LONG_RUNS_DIR (default runs)
# is where the run folders and logs go.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
litefer="${LITEFER:-$here/.venv/bin/litefer}"
export LITEFER_DATA="${LITEFER_DATA:-$here/../shared/data}"
dir="${LONG_RUNS_DIR:-runs}"
RUNS="${RUNS:-i_mobilenetv2_fer2013_cpu150=configs/i_mobilenetv2_fer2013_cpu150.yaml se_sepnet_fer2013=configs/se_sepnet_fer2013.yaml}"

pid_of() {  # the PID of the `litefer train` process writing $dir/$1, if any
  pgrep -f "litefer train .*$dir/$1( |$)" | head -n 1 || true
}

case "${1:-}" in
  start)
    mkdir -p "$dir"
    for entry in $RUNS; do
      name="${entry%%=*}"; config="${entry#*=}"
      if [ -n "$(pid_of "$name")" ]; then echo "$name: already running (pid $(pid_of "$name"))"; continue; fi
      if [ -f "$dir/$name/last.pt" ]; then
        args=("$dir/$name"); what="resuming"
      else
        [ -f "$config" ] || { echo "$name: config $config not found" >&2; exit 2; }
        args=("$config" --out "$dir/$name"); what="starting"
        if [ -n "${BUDGET:-}" ]; then args+=(--budget "$BUDGET"); what="starting ($BUDGET budget)"; fi
      fi
      echo "$name: $what (log: $dir/$name.log)"
      OMP_NUM_THREADS=1 nohup "$litefer" train "${args[@]}" --set train.threads=1 --no-progress \
        >> "$dir/$name.log" 2>&1 &
    done
    ;;
  status)
    "$litefer" runs "$dir" | awk -v names="$RUNS" 'NR == 1 { print; next }
      { for (i = 1; i <= split(names, a, " "); i++) { split(a[i], kv, "="); if ($1 == kv[1]) print } }'
    ;;
  stop)
    pids=()
    for entry in $RUNS; do
      name="${entry%%=*}"; pid="$(pid_of "$name")"
      [ -n "$pid" ] || { echo "$name: not running"; continue; }
      echo "$name: SIGTERM to $pid (it checkpoints, then exits)"; kill -TERM "$pid"; pids+=("$pid")
    done
    for pid in "${pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 2; done; done
    ;;
  *)
    echo "usage: $0 start|status|stop" >&2; exit 2
    ;;
esac
