#!/usr/bin/env bash
# The project's long CPU training runs, as one queue in the background: the runs go one after
# another, each on all the machine's cores (on this 2-vCPU machine two one-thread runs side by
# side gave no measured gain in total, and made every speed measurement of both false; see
# docs/training.md). Each run writes runs/<name>/ (last.pt every 10 min and on SIGTERM) and
# runs/<name>.log; the queue's own log is runs/long_runs.log. Run it from anywhere; paths are
# relative to the repository.
#
#   scripts/long_runs.sh start    # start the queue: a finished run is skipped, a stopped one is
#                                 # resumed from runs/<name>/last.pt, a new one is started
#   scripts/long_runs.sh status   # litefer runs, the long runs only, and what the queue is doing
#   scripts/long_runs.sh stop     # SIGTERM: the current run checkpoints and exits, the queue
#                                 # ends with it; waits for both
#
# BUDGET=2h30m sizes each run that starts (not one that resumes) to that wall time
# (`litefer train --budget`: epochs measured to fit). THREADS (default: the CPU count) is the
# thread count of a run that starts; a resumed run keeps its checkpoint's. RUNS="name=config ..."
# replaces the list below; LONG_RUNS_DIR (default runs) is where the run folders and logs go.
# A run that fails (non-zero exit) stops the queue: its log says why.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
litefer="${LITEFER:-$here/.venv/bin/litefer}"
export LITEFER_DATA="${LITEFER_DATA:-$here/../shared/data}"
dir="${LONG_RUNS_DIR:-runs}"
if [ "${1:-}" = _queue ]; then dir="$2"; fi
# The list holds only runs whose results have not landed yet: i_mobilenetv2_fer2013_cpu150 finished
# (docs/results.md) and left it, so that a fresh checkout, which has no runs/, does not repeat it.
RUNS="${RUNS:-se_sepnet_fer2013_cos50=configs/se_sepnet_fer2013_cos50.yaml}"
threads="${THREADS:-$(nproc)}"

pid_of() {  # the PID of the `litefer train` process writing $dir/$1, if any
  pgrep -f "litefer train .*$dir/$1( |$)" | head -n 1 || true
}
queue_pid() {  # the PID of this directory's queue, if one runs
  pgrep -f "long_runs.sh _queue $dir\$" | head -n 1 || true
}
state_of() {  # finished | resume | new, for run $1
  if [ -f "$dir/$1/result.json" ]; then echo finished
  elif [ -f "$dir/$1/last.pt" ]; then echo resume
  else echo new; fi
}

case "${1:-}" in
  start)
    [ "$threads" -ge 1 ] 2>/dev/null || { echo "THREADS must be a positive integer, got '$threads'" >&2; exit 2; }
    for entry in $RUNS; do   # check the whole list before anything starts
      name="${entry%%=*}"; config="${entry#*=}"
      if [ "$(state_of "$name")" = new ] && [ ! -f "$config" ]; then echo "$name: config $config not found" >&2; exit 2; fi
    done
    if [ -n "$(queue_pid)" ]; then echo "already running (queue pid $(queue_pid)); see: $0 status"; exit 0; fi
    mkdir -p "$dir"
    first=1
    for entry in $RUNS; do
      name="${entry%%=*}"
      if [ -n "$(pid_of "$name")" ]; then
        echo "$name: already running outside the queue (pid $(pid_of "$name")); stop it first" >&2; exit 2
      fi
      case "$(state_of "$name")" in
        finished) echo "$name: finished (skipped)"; continue ;;
        resume) what="resuming" ;;
        new) what="starting on $threads threads${BUDGET:+ ($BUDGET budget)}" ;;
      esac
      if [ "$first" = 1 ]; then echo "$name: $what (log: $dir/$name.log)"; first=0
      else echo "$name: queued, then $what"; fi
    done
    [ "$first" = 0 ] || { echo "nothing to run: every run has finished"; exit 0; }
    nohup bash "${BASH_SOURCE[0]}" _queue "$dir" >> "$dir/long_runs.log" 2>&1 &
    ;;
  _queue)   # the queue itself (started by `start`): each run in turn, waited for before the next
    child=""; stopping=0
    trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
    for entry in $RUNS; do
      [ "$stopping" = 0 ] || break
      name="${entry%%=*}"; config="${entry#*=}"
      case "$(state_of "$name")" in
        finished) continue ;;
        resume) args=("$dir/$name") ;;
        new) args=("$config" --out "$dir/$name" --set "train.threads=$threads")
             if [ -n "${BUDGET:-}" ]; then args+=(--budget "$BUDGET"); fi ;;
      esac
      echo "$(date -u +%FT%TZ) $name: litefer train ${args[*]}"
      OMP_NUM_THREADS="$threads" "$litefer" train "${args[@]}" --no-progress >> "$dir/$name.log" 2>&1 &
      child=$!
      rc=0; wait "$child" || rc=$?
      while kill -0 "$child" 2>/dev/null; do wait "$child" || rc=$?; done   # a signal interrupts wait
      child=""
      echo "$(date -u +%FT%TZ) $name: exit $rc"
      if [ "$stopping" = 1 ]; then echo "stopped; resume with: $0 start"; break; fi
      if [ "$rc" = 130 ] || [ "$rc" = 143 ]; then   # the run itself got SIGINT / SIGTERM (it checkpointed)
        echo "$name was stopped by a signal: queue stopped; resume with: $0 start"; break
      fi
      if [ "$rc" != 0 ]; then echo "$name failed (exit $rc; see $dir/$name.log): queue stopped"; exit "$rc"; fi
    done
    ;;
  status)
    "$litefer" runs "$dir" | awk -v names="$RUNS" 'NR == 1 { print; next }
      { for (i = 1; i <= split(names, a, " "); i++) { split(a[i], kv, "="); if ($1 == kv[1]) print } }'
    if [ -n "$(queue_pid)" ]; then echo "queue: running (pid $(queue_pid)); log: $dir/long_runs.log"
    else echo "queue: not running"; fi
    ;;
  stop)
    q="$(queue_pid)"
    if [ -z "$q" ]; then   # no queue: still stop a listed run that was started by hand
      echo "queue: not running"
      for entry in $RUNS; do
        name="${entry%%=*}"; pid="$(pid_of "$name")"
        [ -n "$pid" ] || continue
        echo "$name: SIGTERM to $pid (it checkpoints, then exits)"; kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 1; done
      done
      exit 0
    fi
    echo "queue: SIGTERM to $q (the current run checkpoints, then exits)"
    kill -TERM "$q"
    while kill -0 "$q" 2>/dev/null; do sleep 1; done
    ;;
  *)
    echo "usage: $0 start|status|stop" >&2; exit 2
    ;;
esac
