#!/usr/bin/env bash
# Export a training checkpoint of glm130b.pretrain to the reference layout (and safetensors):
#   bash scripts/export.sh --input-folder checkpoints/run --output-folder glm-sat [--target-tp N] [--safetensors]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
exec python -m glm130b.checkpoint.export "$@"
