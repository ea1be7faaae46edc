# Sourced by pretrain_multiple_node.sh and evaluate_multiple_node.sh: what starts the processes
# on many nodes. Sets RUN (the launcher's command, ending where a module name follows) and,
# for the launchers that do not gather output themselves, sends this shell's output to
# logs/<LOG_NAME>-<date>-<host>.log. Defaults: NNODES (or NUM_WORKERS), GPUS_PER_NODE (or
# NUM_GPUS_PER_WORKER, 8), NODE_RANK 0, MASTER_ADDR 127.0.0.1, MASTER_PORT 29500.

# srun sets SLURM_STEP_ID in its tasks only, not in the batch script that calls srun.
[ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_STEP_ID:-}" ] && in_srun=slurm || in_srun=torchrun
LAUNCHER="${LAUNCHER:-$in_srun}"
NNODES="${NNODES:-${NUM_WORKERS:-$DEFAULT_NNODES}}"   # NUM_WORKERS, NUM_GPUS_PER_WORKER: older names
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
  # The caller execs the launcher, so that a signal sent to the script reaches it; the output
  # still goes to the log (one per node) through tee.
  exec > >(tee "logs/$LOG_NAME-$(date +'%Y.%m.%d-%H:%M:%S')-$(hostname).log") 2>&1
fi
