#!/usr/bin/env bash
# Zero-shot evaluation (reference scripts/evaluate.sh): the model from configs/model_*.sh, the
# tasks (YAML files or folders) as arguments, the data under DATA_PATH, e.g.
#   DATA_PATH=/data/evaluation bash scripts/evaluate.sh tasks/lambada tasks/mmlu
#   MODEL_CONFIG=configs/model_glm_tiny.sh bash scripts/evaluate.sh tasks/sample
# Without DATA_PATH each task's data is read beside its YAML file (as tasks/sample keeps it).
# Options after the tasks go to python -m glm130b.evaluate (e.g. --output-path DIR, --limit N,
# --allow-missing to skip tasks without data instead of stopping, or --trust-task-code for a
# task whose `module:` is neither glm130b's nor in tasks/ beside it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${MODEL_CONFIG:-configs/model_glm_130b.sh}"

DATA_ARGS=""
if [ -n "${DATA_PATH:-}" ]; then
    DATA_ARGS="--data-path $DATA_PATH"
fi
ARGS="--mode inference $DATA_ARGS $MODEL_ARGS"

if [ "$MP_SIZE" -gt 1 ]; then
    exec torchrun --nproc_per_node "$MP_SIZE" -m glm130b.evaluate $ARGS --task "$@"
fi
exec python -m glm130b.evaluate $ARGS --task "$@"
