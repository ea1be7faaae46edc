#!/usr/bin/env bash
# Pretrain on many nodes: the DeepSpeed launcher starts NUM_GPUS_PER_WORKER processes on each
# of NUM_WORKERS hosts of HOST_FILE_PATH (one "hostname slots=N" line per node, reachable by
# passwordless ssh, with this repository and its .venv at the same path). GLM-130B's run:
#   NUM_WORKERS=96 HOST_FILE_PATH=hostfile DATA_PATH="0.5 pile 0.5 wudao" \
#     MULTITASK_DATA_PATH=mip bash scripts/pretrain_multiple_node.sh
# A rerun with --load of the same --save folder resumes exactly where the last checkpoint was.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${PRETRAIN_CONFIG:-configs/pretrain_glm_130b.sh}"

NUM_WORKERS="${NUM_WORKERS:-96}"
NUM_GPUS_PER_WORKER="${NUM_GPUS_PER_WORKER:-8}"
HOST_FILE_PATH="${HOST_FILE_PATH:-<your hostfile>}"
# The reference's InfiniBand settings; the launcher forwards NCCL_* variables to every node.
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}" NCCL_NET_GDR_LEVEL="${NCCL_NET_GDR_LEVEL:-2}"

mkdir -p logs
LOG="logs/pretrain-$(date +'%Y.%m.%d-%H:%M:%S').log"
# The launcher replaces this shell (exec), so that a signal sent to the script reaches it; the
# output still goes to the log through tee.
exec > >(tee "$LOG") 2>&1
exec deepspeed --num_nodes "$NUM_WORKERS" --num_gpus "$NUM_GPUS_PER_WORKER" \
    --hostfile "$HOST_FILE_PATH" --module glm130b.pretrain \
    $MODEL_ARGS $PARALLEL_ARGS $DATA_ARGS $TRAIN_ARGS --deepspeed-config "$DS_CONFIG" $SAVE_ARGS \
    "$@"
