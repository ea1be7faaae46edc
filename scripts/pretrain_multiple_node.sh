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

# srun sets SLURM_STEP_ID in its tasks only, not in the batch script that calls srun.
[ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_STEP_ID:-}" ] && in_srun=slurm || in_srun=torchrun
LAUNCHER="${LAUNCHER:-$in_srun}"
NNODES="${NNODES:-${NUM_WORKERS:-96}}"            # NUM_WORKERS, NUM_GPUS_PER_WORKER: older names
GPUS_PER_NODE="${GPUS_PER_NODE:-${NUM_GPUS_PER_WORKER:-8}}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
HOST_FILE_PATH="${HOST_FILE_PATH:-<your hostfile>}"
# The reference's InfiniBand settings; every launcher passes NCCL_* variables on.
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}" NCCL_NET_GDR_LEVEL="${NCCL_NET_GDR_LEVEL:-2}"
# Several CPU processes on few cores slow down many times over with one thread pool each.
if [ "$DS_ACCELERATOR" = cpu ]; then export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"; fi

case "$LAUNCHER" in
  torchrun)
    if [ -n "${RDZV_ENDPOINT:-}" ]; then
      NODES=(--rdzv-backend c10d --rdzv-endpoint "$RDZV_ENDPOINT" --rdzv-id "${RDZV_ID:-glm130b}")
    else
      NODES=(--node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT")
    fi
    RUN=(torchrun --nnodes "$NNODES" --nproc-per-node "$GPUS_PER_NODE" "${NODES[@]}" -m) ;;
  slurm) RUN=(python -m) ;;  # glm130b.parallel.launch reads SLURM's variables
  deepspeed)
    RUN=(deepspeed --num_nodes "$NNODES" --num_gpus "$GPUS_PER_NODE" --hostfile "$HOST_FILE_PATH"
         --master_port "$MASTER_PORT" --module) ;;
  *) echo "error: LAUNCHER=$LAUNCHER: use torchrun, slurm or deepspeed" >&2; exit 2 ;;
esac

if [ "$LAUNCHER" != slurm ]; then  # srun gathers its tasks' output itself
  mkdir -p logs
  # The launcher replaces this shell (exec), so that a signal sent to the script reaches it;
  # the output still goes to the log (one per node) through tee.
  exec > >(tee "logs/pretrain-$(date +'%Y.%m.%d-%H:%M:%S')-$(hostname).log") 2>&1
fi
exec "${RUN[@]}" glm130b.pretrain $MODEL_ARGS $PARALLEL_ARGS $DATA_ARGS $TRAIN_ARGS \
    --deepspeed-config "$DS_CONFIG" $SAVE_ARGS "$@"
