#!/usr/bin/env bash
# Tokenize jsonl/text files into token files (PREFIX.bin/.idx) for pretraining:
#   bash scripts/preprocess.sh data/corpus corpus.jsonl [more.jsonl ...]
# Instruction data: JSON_KEYS="input target" bash scripts/preprocess.sh data/mip mip.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
OUTPUT_PREFIX="${1:?usage: preprocess.sh OUTPUT_PREFIX INPUT [INPUT ...]}"
shift
TOKENIZER_ARGS="${TOKENIZER_ARGS:---tokenizer-type icetk-glm-130B}"
JSON_KEYS="${JSON_KEYS:-text}"
WORKERS="${WORKERS:-$(nproc)}"
# shellcheck disable=SC2086  # TOKENIZER_ARGS and JSON_KEYS are word lists
exec python -m glm130b.data.preprocess --output-prefix "$OUTPUT_PREFIX" --input "$@" \
  --json-keys $JSON_KEYS --workers "$WORKERS" $TOKENIZER_ARGS
