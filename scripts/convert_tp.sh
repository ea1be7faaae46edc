#!/usr/bin/env bash
# Reshard a reference-layout checkpoint: bash scripts/convert_tp.sh INPUT OUTPUT TARGET_TP [more args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
INPUT=${1:?usage: convert_tp.sh INPUT_FOLDER OUTPUT_FOLDER TARGET_TP}
OUTPUT=${2:?usage: convert_tp.sh INPUT_FOLDER OUTPUT_FOLDER TARGET_TP}
TARGET_TP=${3:-4}
exec python -m glm130b.checkpoint.convert_tp --input-folder "$INPUT" --output-folder "$OUTPUT" \
    --target-tp "$TARGET_TP" "${@:4}"
