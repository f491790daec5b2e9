#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md, one after another, on an otherwise idle machine.
#   bash benchmarks/run_all.sh [OUT_DIR]        (default out/bench; needs .venv, and .venv-fer
#                                                for the peer comparison: see bench_peer_fer.py)
# PEER_MODELS=default,runs/mx_fer2013/best.pt adds more litefer models to the peer table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/bench}
PY=.venv/bin/python
mkdir -p "$OUT"
$PY benchmarks/bench_models.py --models all --repeats 30 --batch-repeats 5 \
    --json "$OUT/models.json" --md "$OUT/models.md"
$PY benchmarks/bench_pipeline.py --json "$OUT/pipeline.json" --md "$OUT/pipeline.md"
if [ -x .venv-fer/bin/python ]; then
  $PY benchmarks/bench_peer_fer.py --count all --model "${PEER_MODELS:-default}" --json "$OUT/peer_fer.json" --md "$OUT/peer_fer.md"
else
  echo "skipping bench_peer_fer.py: no .venv-fer (see its docstring)" >&2
fi
$PY benchmarks/loadtest.py --requests 100 --concurrency 4 --json "$OUT/loadtest.json" | tee "$OUT/loadtest.md"
