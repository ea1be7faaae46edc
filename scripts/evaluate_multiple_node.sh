#!/usr/bin/env bash
# Zero-shot evaluation on many nodes (reference scripts/evaluate_multiple_node.sh). Every MP_SIZE
# consecutive ranks hold one tensor-parallel replica of the model; the replicas share each
# file's examples. LAUNCHER says what starts the processes, as in pretrain_multiple_node.sh:
#   torchrun (default)  once on every node:
#       NNODES=16 NODE_RANK=<0..15> MASTER_ADDR=<node 0> DATA_PATH=/data/evaluation \
#         bash scripts/evaluate_multiple_node.sh tasks
#     or RDZV_ENDPOINT=<host:port> instead of NODE_RANK and MASTER_ADDR (c10d rendezvous).
#   slurm               one process per GPU, each a task of srun (the default inside an srun
#                       step), e.g. srun --ntasks-per-node 8 bash scripts/evaluate_multiple_node.sh
#   deepspeed           the DeepSpeed launcher, from one node, over ssh/pdsh to the NNODES hosts
#                       of HOST_FILE_PATH ("hostname slots=N" lines, same paths on every host).
# Options after the tasks go to glm130b.evaluate (--limit N, --allow-missing, --output-path DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${MODEL_CONFIG:-configs/model_glm_130b.sh}"

DATA_PATH="${DATA_PATH:-<your evaluation dataset base directory>}"
DEFAULT_NNODES=16 LOG_NAME=evaluate
source "$ROOT/scripts/multi_node_launch.sh"
exec "${RUN[@]}" glm130b.evaluate --mode inference --data-path "$DATA_PATH" $MODEL_ARGS \
    --task "$@"
