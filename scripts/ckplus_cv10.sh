#!/usr/bin/env bash
# CK+ subject-independent 10-fold with I-MobileNetV2's paper recipe, one fold after another,
# each fold its own resumable run (runs/imv2_ckplus_cv10/foldK): rerun this script after any
# stop and it resumes the unfinished fold and goes on.  One thread (the other core is for
# another job).  Then: litefer runs runs/imv2_ckplus_cv10; docs/results.md tabulates the folds.
#   OMP_NUM_THREADS=1 nohup nice -n 5 bash scripts/ckplus_cv10.sh >> runs/imv2_ckplus_cv10.log 2>&1 &
# FOLDS="5 6 7 8 9" runs only those folds (e.g. on a new checkout whose earlier folds are
# already tabulated in docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
LITEFER=${LITEFER:-.venv/bin/litefer}
OUT=${OUT:-runs/imv2_ckplus_cv10}
FOLDS=${FOLDS:-$(seq 0 9)}
for k in $FOLDS; do
    d="$OUT/fold$k"
    if [ -f "$d/result.json" ]; then
        echo "fold $k: finished"
        continue
    fi
    if [ -f "$d/last.pt" ]; then
        echo "fold $k: resuming"
        "$LITEFER" train "$d" --set train.threads=1 --no-progress
    else
        echo "fold $k: starting"
        "$LITEFER" train configs/i_mobilenetv2_ckplus.yaml --fold "$k" --out "$OUT" --set train.threads=1 --no-progress
    fi
done
