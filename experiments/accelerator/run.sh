#!/usr/bin/env bash
# The accelerator measurement of issue 24 (experiments/accelerator/measure.py; docs/benchmarks.md "Accelerator run").
#   experiments/accelerator/run.sh [--out DIR] [--budget SECONDS]   on a CUDA GPU machine: < 8 minutes
#   experiments/accelerator/run.sh --dry-run                          on CPU, tiny shapes: < ~2 minutes
# Installs nothing: it uses the python3 that holds jax (with CUDA) and torch; when something is missing it stops at
# once with one `error:` line saying what to carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" experiments/accelerator/measure.py "$@"
