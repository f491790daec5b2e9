#!/usr/bin/env bash
# Reproduce the papers' runs on a GPU within a time budget; see scripts/gpu_reproduce.py.
#   scripts/gpu_reproduce.sh --budget-hours 6 --out runs/gpu [--batch 512] [--configs configs/a.yaml ...]
# Rerun the same command after any stop: unfinished runs resume from their last.pt.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$here/.venv/bin/python}"
[ -x "$py" ] || py=python3
export LITEFER_DATA="${LITEFER_DATA:-$here/../shared/data}"
exec "$py" "$here/scripts/gpu_reproduce.py" "$@"
