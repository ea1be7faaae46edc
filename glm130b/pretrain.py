"""Pretrain GLM on blank-infilling data with DeepSpeed: tensor x pipeline x data parallel,
ZeRO, FP16 with loss scaling or BF16, exact resume (reference §8).

    deepspeed --num_gpus 8 --module glm130b.pretrain $MODEL_ARGS $TRAIN_ARGS \\
        --deepspeed-config configs/ds_config_glm_130b.json --save checkpoints/run

--load takes a checkpoint this trainer saved (resumed exactly) or one in the reference layout
at any tensor-parallel degree (its weights start the run, resharded to this run's split), told
apart by their files. A --save folder holding checkpoints later than where the run starts is
refused (--overwrite-checkpoints removes them instead); what interrupted saves left there is
removed at the start, and the train log is cut back to the starting iteration.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch.distributed as dist

from .cli import add_runtime_args, close_process_group, config_from_args, model_config, run
from .config import add_model_args
from .errors import GLMError, UsageError
from .data.infilling import InfillingConfig
from .data.mixture import DataConfig, add_data_args, build_mixture, parse_split
from .parallel import (get_data_parallel_world_size, get_pipeline_model_parallel_world_size,
                       get_tensor_model_parallel_world_size)
from .tokenization import add_tokenizer_args, check_vocab_size, get_tokenizer
from .training import checkpointing
from .training.options import TrainingConfig
from .training.engine import build_engine, deepspeed_config, initialize_training
from .training.start import check_schedule, plan_start
from .training.schedules import (BatchSizeRampup, LRSchedule, ShrinkSchedule, decay_samples,
                                 parse_skip_ranges, schedule_record)
from .training.trainer import TrainerState, train


def add_training_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("parallelism")
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1)
    g.add_argument("--partition-method", default="type:transformer|embedding",
                   help="how DeepSpeed splits layers into stages ('parameters', 'uniform', "
                        "'type:REGEX')")
    g.add_argument("--checkpoint-activations", "--recompute-activations", action="store_true",
                   help="recompute each layer's activations in the backward pass")
    g.add_argument("--use-flash-attn", dest="attention_impl", action="store_const", const="sdpa",
                   default=argparse.SUPPRESS, help="Megatron's; here --attention-impl sdpa "
                   "(PyTorch's fused attention: FlashAttention itself takes no GLM prefix mask)")

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
    g.add_argument("--lr-warmup-samples", type=int)
    g.add_argument("--lr-warmup-iters", type=int, help="x --global-batch-size samples")
    g.add_argument("--lr-warmup-fraction", type=float, help="of the decay samples")
    g.add_argument("--lr-decay-samples", type=int,
                   help="default: the whole run (--train-samples, or --train-iters x batch)")
    g.add_argument("--lr-decay-iters", type=int, help="x --global-batch-size samples")
    g.add_argument("--override-opt_param-scheduler", "--override-opt-param-scheduler",
                   dest="override_opt_param_scheduler", action="store_true",
                   help="resume with this command line's schedule where it differs from the "
                        "checkpoint's (without it such a resume is refused)")
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
    g.add_argument("--deepspeed", action="store_true", help="Megatron-DeepSpeed's switch, "
                   "accepted: this trainer always runs on DeepSpeed")
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
    g.add_argument("--overwrite-checkpoints", action="store_true",
                   help="start even though --save holds checkpoints later than where this run "
                        "starts; they are removed first (without it such a start is refused)")
    g.add_argument("--exit-interval", type=int, help="stop (after saving) at a multiple of this")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--eval-interval", type=int, default=1000, help="iterations between "
                   "validations on --split's valid documents (0: only at the end)")
    g.add_argument("--eval-iters", type=int, default=100, help="global batches per validation "
                   "and test (0: none)")
    g.add_argument("--tensorboard-dir", help="default: SAVE/tensorboard")
    g.add_argument("--train-log", help="one JSON line per step; default: SAVE/train_log.jsonl")
    g.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU where unknown")
    return parser


def parse_args(argv=None) -> tuple[argparse.Namespace, TrainingConfig]:
    """The arguments, and the training config made of them (its checks reported as usage
    errors, like argparse's own)."""
    # No abbreviations: Megatron's --deepspeed would otherwise be ambiguous.
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    add_model_args(p)
    add_tokenizer_args(p)
    add_data_args(p)
    add_runtime_args(p)
    add_training_args(p)
    args = p.parse_args(argv)
    try:
        training = config_from_args(TrainingConfig, args, **lr_samples(args),
                                    recompute_activations=args.checkpoint_activations)
    except UsageError as e:
        p.error(str(e))
    return args, training


def lr_samples(args: argparse.Namespace) -> dict:
    """Megatron's iteration and fraction forms of the warm-up and the decay, in samples."""
    batch = args.global_batch_size
    if args.lr_decay_iters is not None and args.lr_decay_samples is not None:
        raise UsageError("give at most one of --lr-decay-samples and --lr-decay-iters")
    decay = args.lr_decay_samples
    if args.lr_decay_iters is not None:
        decay = args.lr_decay_iters * batch
    warmups = [f for f in ("lr_warmup_samples", "lr_warmup_iters", "lr_warmup_fraction")
               if getattr(args, f) is not None]
    if len(warmups) > 1:
        raise UsageError("give at most one of --lr-warmup-samples, --lr-warmup-iters and "
                         "--lr-warmup-fraction")
    warmup = args.lr_warmup_samples or 0
    if args.lr_warmup_iters is not None:
        warmup = args.lr_warmup_iters * batch
    if args.lr_warmup_fraction is not None:
        run = args.train_samples or (args.train_iters or 0) * batch
        warmup = int(args.lr_warmup_fraction * (decay or run))
    return {"lr_warmup_samples": warmup, "lr_decay_samples": decay}


def data_config(args: argparse.Namespace) -> DataConfig:
    return config_from_args(DataConfig, args, infilling=config_from_args(InfillingConfig, args))


def samplers(data: DataConfig, tokenizer, seed: int):
    """The training sampler, and those of the held-out parts --split gives documents to."""
    _, valid, test = parse_split(data.split)
    held_out = {part: build_mixture(data, tokenizer, seed, part)
                for part, weight in (("valid", valid), ("test", test)) if weight > 0}
    return build_mixture(data, tokenizer, seed), held_out


def schedules(training: TrainingConfig, shrink_alpha: float):
    """(lr by consumed samples, global batch by consumed samples, embedding-gradient shrink by
    iteration, skipped iteration ranges); `shrink_alpha` is the model's, where the shrink
    starts."""
    rampup = BatchSizeRampup.from_flag(training.rampup_batch_size, training.global_batch_size)
    rampup.check_divisible(training.micro_batch_size, get_data_parallel_world_size())
    lr = LRSchedule(training.lr, training.min_lr, training.lr_warmup_samples,
                    decay_samples(training), training.lr_decay_style)
    shrink = ShrinkSchedule(shrink_alpha, training.shrink_embedding_gradient_steps)
    return lr, rampup, shrink, parse_skip_ranges(training.skip_train_iteration_range)


def main(argv=None) -> int:
    args, training = parse_args(argv)
    device = initialize_training(training.model_parallel_size,
                                 training.pipeline_model_parallel_size)
    try:
        return pretrain(args, training, device)
    except (GLMError, OSError):
        # Every rank stops on the same error; left to interpreter exit, gloo's threads were seen
        # to abort a rank on its way out.
        close_process_group(wait=False)
        raise


def pretrain(args: argparse.Namespace, training: TrainingConfig, device) -> int:
    config = model_config(args)
    tokenizer = get_tokenizer(args.tokenizer_type, args.tokenizer_model)
    check_vocab_size(tokenizer, config.vocab_size)
    if training.seq_length > config.max_sequence_length:
        raise UsageError(f"--seq-length {training.seq_length} exceeds --max-sequence-length "
                         f"{config.max_sequence_length}")
    try:
        sampler, held_out = samplers(data_config(args), tokenizer, training.seed)
        lr_at, batch_at, shrink_at, skips = schedules(training,
                                                      config.shrink_embedding_gradient_alpha)
    except ValueError as e:  # a data or schedule argument that cannot work
        raise UsageError(str(e)) from None
    clip = deepspeed_config(training, training.global_batch_size)["gradient_clipping"]
    state = TrainerState(layout={"tensor": get_tensor_model_parallel_world_size(),
                                 "pipeline": get_pipeline_model_parallel_world_size(),
                                 "data": get_data_parallel_world_size(),
                                 "world": dist.get_world_size()},
                         model=dataclasses.asdict(config),
                         schedule=schedule_record(training, clip))
    start = plan_start(training)
    rng = checkpointing.check_resume(training.load) if start.resume else None
    if start.resume and not training.override_opt_param_scheduler:
        check_schedule(start.schedule, state.schedule)
    # The batch size DeepSpeed starts with depends on where the run stands.
    state.consumed_samples = start.consumed_samples
    engine, is_pipeline = build_engine(training, config, batch_at(state.consumed_samples),
                                       reference_weights=start.reference_weights)
    if start.resume:
        state = TrainerState(**{**checkpointing.load(engine, training.load, rng),
                                "layout": state.layout, "model": state.model,
                                "schedule": state.schedule})
    if dist.get_rank() == 0:
        what = (f"resumed at iteration {state.iteration}" if start.resume else
                f"weights from {training.load}" if training.load else "initialised")
        print(f"glm130b.pretrain: {sum(p.numel() for p in engine.module.parameters()):,} "
              f"parameters on rank 0, layout {state.layout}, {what}", flush=True)
    state = train(training, engine, is_pipeline, sampler, state,
                  (lr_at, batch_at, shrink_at, skips), config, device, held_out)
    if dist.get_rank() == 0:
        print(f"done: iteration {state.iteration}, {state.consumed_samples:,} samples, "
              f"{state.skipped_steps} skipped steps", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
