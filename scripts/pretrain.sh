#!/usr/bin/env bash
# Pretrain on one node through the DeepSpeed launcher (reference's LargeScale scripts): the
# recipe from PRETRAIN_CONFIG (default: the tiny CPU model), GPUS processes, your arguments
# last (they win), e.g.
#   bash scripts/pretrain.sh                                   # glm-tiny on CPU, 1 process
#   GPUS=8 PRETRAIN_CONFIG=configs/pretrain_glm_130b.sh bash scripts/pretrain.sh --exit-interval 10
#   bash scripts/pretrain.sh --load quickstart-output/checkpoints/pretrain   # resume
#   bash scripts/pretrain.sh --load quickstart-output/checkpoints/pretrain --train-iters 600 \
#       --lr-decay-iters 300                        # go on, at the end of the same schedule
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${PRETRAIN_CONFIG:-configs/pretrain_glm_tiny.sh}"
GPUS="${GPUS:-1}"
MASTER_PORT="${MASTER_PORT:-$((20000 + RANDOM % 10000))}"
# Several CPU processes on few cores slow down many times over with one thread pool each.
if [ "$DS_ACCELERATOR" = cpu ] && [ "$GPUS" -gt 1 ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi

exec deepspeed --num_gpus "$GPUS" --master_port "$MASTER_PORT" --module glm130b.pretrain \
    $MODEL_ARGS $PARALLEL_ARGS $DATA_ARGS $TRAIN_ARGS --deepspeed-config "$DS_CONFIG" $SAVE_ARGS "$@"
