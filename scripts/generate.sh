#!/usr/bin/env bash
# Fill blanks with GLM (reference scripts/generate.sh): the reference's recommended decoding
# settings, the model from configs/model_*.sh, your arguments last (they win), e.g.
#   bash scripts/generate.sh --input-source interactive
#   MODEL_CONFIG=configs/model_glm_tiny.sh bash scripts/generate.sh --input-source prompts.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${MODEL_CONFIG:-configs/model_glm_130b.sh}"

SEED=1234
MAX_OUTPUT_LENGTH=256
MIN_GEN_LENGTH=0
# BeamSearchStrategy
NUM_BEAMS=4
LENGTH_PENALTY=1.0
NO_REPEAT_NGRAM=3
# BaseStrategy
TEMP=1.0
TOPK=0
TOPP=0.7

ARGS="--seed $SEED \
      --sampling-strategy BaseStrategy \
      --out-seq-length $MAX_OUTPUT_LENGTH \
      --min-gen-length $MIN_GEN_LENGTH \
      --num-beams $NUM_BEAMS \
      --length-penalty $LENGTH_PENALTY \
      --no-repeat-ngram-size $NO_REPEAT_NGRAM \
      --temperature $TEMP \
      --top_k $TOPK \
      --top_p $TOPP \
      --output-path samples \
      $MODEL_ARGS"

if [ "$MP_SIZE" -gt 1 ]; then
    exec torchrun --nproc_per_node "$MP_SIZE" -m glm130b.generate $ARGS "$@"
fi
exec python -m glm130b.generate $ARGS "$@"
