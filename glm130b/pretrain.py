"""Pretrain GLM on blank-infilling data with DeepSpeed: tensor x pipeline x data parallel,
ZeRO, FP16 with loss scaling or BF16, exact resume (reference §8).

    deepspeed --num_gpus 8 --module glm130b.pretrain $MODEL_ARGS $TRAIN_ARGS \\
        --deepspeed-config configs/ds_config_glm_130b.json --save checkpoints/run

--load takes a checkpoint this trainer saved (resumed exactly) or one in the reference layout
at any tensor-parallel degree (its weights start the run, resharded to this run's split).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch.distributed as dist

from .cli import add_runtime_args, model_config, run
from .config import add_model_args
from .errors import UsageError
from .data.mixture import add_data_args, build_mixture
from .parallel import (get_data_parallel_world_size, get_pipeline_model_parallel_world_size,
                       get_tensor_model_parallel_world_size)
from .tokenization import add_tokenizer_args, check_vocab_size, get_tokenizer
from .checkpoint.deepspeed_layout import is_training_checkpoint, read_meta
from .training import checkpointing
from .training.engine import build_engine, initialize_training
from .training.schedules import (BatchSizeRampup, LRSchedule, ShrinkSchedule,
                                 parse_skip_ranges)
from .training.trainer import TrainerState, train


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("parallelism")
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--partition-method", default="type:transformer|embedding",
                   help="how DeepSpeed splits layers into stages ('parameters', 'uniform', "
                        "'type:REGEX')")
    g.add_argument("--checkpoint-activations", action="store_true",
                   help="recompute each layer's activations in the backward pass")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--micro-batch-size", type=int, default=1)
    g.add_argument("--global-batch-size", type=int, required=True)
    g.add_argument("--rampup-batch-size", nargs=3, type=int, metavar=("START", "INCREMENT",
                   "SAMPLES"), help="grow the batch from START by INCREMENT over SAMPLES samples")
    g.add_argument("--train-iters", type=int)
    g.add_argument("--train-samples", type=int)
    g.add_argument("--lr", type=float, default=8e-5)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--lr-decay-style", choices=("cosine", "linear", "constant"), default="cosine")
    g.add_argument("--lr-warmup-samples", type=int, default=0)
    g.add_argument("--lr-decay-samples", type=int,
                   help="default: the whole run (--train-samples, or --train-iters x batch)")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.95)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--clip-grad", type=float, help="global gradient-norm clip (default: the "
                   "DeepSpeed config's gradient_clipping, else 1.0; 0 turns it off)")
    g.add_argument("--shrink-embedding-gradient-steps", nargs=2, type=int, metavar=("KEEP", "RAMP"),
                   help="keep the shrink alpha for KEEP iterations, then ramp it to 1 over RAMP")
    g.add_argument("--skip-train-iteration-range", nargs="+", default=[], metavar="FIRST-LAST",
                   help="iterations whose data is passed over (after loss spikes)")

    g = parser.add_argument_group("precision and DeepSpeed")
    g.add_argument("--deepspeed-config", "--deepspeed_config", help="DeepSpeed JSON (ZeRO, "
                   "precision, clipping); batch sizes come from the command line")
    g.add_argument("--zero-stage", type=int, choices=(0, 1, 2), help="overrides the JSON's")
    g.add_argument("--initial-loss-scale-power", type=int, default=16, help="fp16: 2^N")
    g.add_argument("--loss-scale-window", type=int, default=2000)
    g.add_argument("--hysteresis", type=int, default=2)
    g.add_argument("--min-loss-scale", type=float, default=1.0)

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--save", help="checkpoint folder")
    g.add_argument("--save-interval", type=int, default=0, help="iterations between checkpoints")
    g.add_argument("--keep-last", type=int, default=0, help="keep only the newest K (0: all)")
    g.add_argument("--load", help="a checkpoint of this trainer, or one in the reference layout")
    g.add_argument("--exit-interval", type=int, help="stop (after saving) at a multiple of this")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--tensorboard-dir", help="default: SAVE/tensorboard")
    g.add_argument("--train-log", help="one JSON line per step; default: SAVE/train_log.jsonl")
    g.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU where unknown")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    add_tokenizer_args(p)
    add_data_args(p)
    add_runtime_args(p)
    add_training_args(p)
    args = p.parse_args(argv)
    if (args.train_iters is None) == (args.train_samples is None):
        p.error("give exactly one of --train-iters and --train-samples")
    if args.save:
        args.tensorboard_dir = args.tensorboard_dir or str(Path(args.save) / "tensorboard")
        args.train_log = args.train_log or str(Path(args.save) / "train_log.jsonl")
    return args


def schedules(args):
    rampup = BatchSizeRampup.from_args(args.rampup_batch_size, args.global_batch_size)
    rampup.check_divisible(args.micro_batch_size, get_data_parallel_world_size())
    decay = args.lr_decay_samples or args.train_samples or args.train_iters * args.global_batch_size
    lr = LRSchedule(args.lr, args.min_lr, args.lr_warmup_samples, decay, args.lr_decay_style)
    shrink = ShrinkSchedule(args.shrink_embedding_gradient_alpha,
                            args.shrink_embedding_gradient_steps)
    return lr, rampup, shrink, parse_skip_ranges(args.skip_train_iteration_range)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = initialize_training(args.model_parallel_size,
                                 args.pipeline_model_parallel_size)
    config = model_config(args)
    args.shrink_embedding_gradient_alpha = config.shrink_embedding_gradient_alpha
    tokenizer = get_tokenizer(args.tokenizer_type, args.tokenizer_model)
    check_vocab_size(tokenizer, config.vocab_size)
    if args.seq_length > config.max_sequence_length:
        raise UsageError(f"--seq-length {args.seq_length} exceeds --max-sequence-length "
                         f"{config.max_sequence_length}")
    try:
        sampler = build_mixture(args, tokenizer)
        lr_at, batch_at, shrink_at, skips = schedules(args)
    except ValueError as e:  # a data or schedule argument that cannot work
        raise UsageError(str(e)) from None
    state = TrainerState(layout={"tensor": get_tensor_model_parallel_world_size(),
                                 "pipeline": get_pipeline_model_parallel_world_size(),
                                 "data": get_data_parallel_world_size(),
                                 "world": dist.get_world_size()},
                         model=dataclasses.asdict(config))
    resume = bool(args.load) and is_training_checkpoint(args.load)
    args.reference_load = args.load if args.load and not resume else None
    if resume:  # the batch size DeepSpeed starts with depends on where the run stands
        state.consumed_samples = read_meta(args.load)["consumed_samples"]
    engine, is_pipeline = build_engine(args, config, batch_at(state.consumed_samples))
    if resume:
        state = TrainerState(**{**checkpointing.load(engine, args.load),
                                "layout": state.layout, "model": state.model})
    if dist.get_rank() == 0:
        what = (f"resumed at iteration {state.iteration}" if resume else
                f"weights from {args.load}" if args.load else "initialised")
        print(f"glm130b.pretrain: {sum(p.numel() for p in engine.module.parameters()):,} "
              f"parameters on rank 0, layout {state.layout}, {what}", flush=True)
    state = train(args, engine, is_pipeline, sampler, state,
                  (lr_at, batch_at, shrink_at, skips), config, device)
    if dist.get_rank() == 0:
        print(f"done: iteration {state.iteration}, {state.consumed_samples:,} samples, "
              f"{state.skipped_steps} skipped steps", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
