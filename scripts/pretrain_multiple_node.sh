#!/usr/bin/env bash
# Pretrain on many nodes. LAUNCHER says what starts the processes; the rank layout is the same
# under each (rank = node rank x GPUS_PER_NODE + local rank: tensor-parallel ranks share a node).
#   torchrun (default)  run this script once on every node, e.g. for GLM-130B's run:
#       NNODES=96 NODE_RANK=<0..95> MASTER_ADDR=<node 0> DATA_PATH="0.5 pile 0.5 wudao" \
#         MULTITASK_DATA_PATH=mip bash scripts/pretrain_multiple_node.sh
#     or RDZV_ENDPOINT=<host:port> instead of NODE_RANK and MASTER_ADDR (c10d rendezvous).
#   slurm               one process per GPU, each a task of srun (the default inside an srun
#                       step): see scripts/pretrain_slurm.sbatch.
#   deepspeed           the DeepSpeed launcher, from one node, over ssh/pdsh to the NNODES hosts
#                       of HOST_FILE_PATH ("hostname slots=N" lines, same paths on every host).
# A rerun with --load of the same --save folder resumes exactly where the last checkpoint was.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
source "${PRETRAIN_CONFIG:-configs/pretrain_glm_130b.sh}"

DEFAULT_NNODES=96 LOG_NAME=pretrain
source "$ROOT/scripts/multi_node_launch.sh"
exec "${RUN[@]}" glm130b.pretrain $MODEL_ARGS $PARALLEL_ARGS $DATA_ARGS $TRAIN_ARGS \
    --deepspeed-config "$DS_CONFIG" $SAVE_ARGS "$@"
