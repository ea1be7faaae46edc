#!/usr/bin/env bash
# Zero-shot evaluation on many nodes (reference scripts/evaluate_multiple_node.sh): the
# DeepSpeed launcher starts NUM_GPUS_PER_WORKER processes on each of NUM_WORKERS hosts of
# HOST_FILE_PATH (one "hostname slots=N" line per node, reachable by passwordless ssh, with
# this repository and its .venv at the same path). Every MP_SIZE consecutive ranks hold one
# tensor-parallel replica of the model; the replicas share each file's examples, e.g.
#   HOST_FILE_PATH=hostfile DATA_PATH=/data/evaluation bash scripts/evaluate_multiple_node.sh tasks
# Options after the tasks go to glm130b.evaluate (--limit N, --allow-missing, --output-path DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${MODEL_CONFIG:-configs/model_glm_130b.sh}"

NUM_WORKERS="${NUM_WORKERS:-16}"
NUM_GPUS_PER_WORKER="${NUM_GPUS_PER_WORKER:-8}"
HOST_FILE_PATH="${HOST_FILE_PATH:-<your hostfile>}"
DATA_PATH="${DATA_PATH:-<your evaluation dataset base directory>}"
# The reference's InfiniBand settings; the launcher forwards NCCL_* variables to every node.
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}" NCCL_NET_GDR_LEVEL="${NCCL_NET_GDR_LEVEL:-2}"

ARGS="--mode inference --data-path $DATA_PATH $MODEL_ARGS"
mkdir -p logs
LOG="logs/evaluate-$(date +'%Y.%m.%d-%H:%M:%S').log"
deepspeed --num_nodes "$NUM_WORKERS" --num_gpus "$NUM_GPUS_PER_WORKER" \
    --hostfile "$HOST_FILE_PATH" --module glm130b.evaluate $ARGS --task "$@" 2>&1 | tee "$LOG"
