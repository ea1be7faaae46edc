#!/usr/bin/env bash
# README's first command: the whole path on the embedded default, on CPU, in minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
QUICKSTART_DIR="${QUICKSTART_DIR:-quickstart-output}"
exec python -m glm130b.quickstart --output-dir "$QUICKSTART_DIR" "$@"
