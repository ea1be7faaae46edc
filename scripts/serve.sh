#!/usr/bin/env bash
# Serve GLM over HTTP: OpenAI-style /v1/completions that fill [MASK]/[sMASK]/[gMASK], /v1/fill,
# and the playground at http://HOST:PORT/. The model from configs/model_*.sh, your arguments
# last (they win), e.g.
#   MODEL_CONFIG=configs/model_glm_tiny.sh bash scripts/serve.sh            # the quickstart's model
#   bash scripts/serve.sh --host 0.0.0.0 --api-key-file ~/.glm-key           # GLM-130B, 8 GPUs
# The API key comes from --api-key-file or $GLM_API_KEY: `ps` shows --api-key KEY to everyone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${MODEL_CONFIG:-configs/model_glm_130b.sh}"

HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
MAX_BATCH_SIZE="${MAX_BATCH_SIZE:-32}"

ARGS="--seed 1234 \
      --host $HOST \
      --port $PORT \
      --max-batch-size $MAX_BATCH_SIZE \
      --model-name $MODEL_TYPE \
      $MODEL_ARGS"

if [ "$MP_SIZE" -gt 1 ]; then
    exec torchrun --nproc_per_node "$MP_SIZE" -m glm130b.serve $ARGS "$@"
fi
exec python -m glm130b.serve $ARGS "$@"
