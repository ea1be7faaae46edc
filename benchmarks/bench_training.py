"""Training throughput of the DeepSpeed engine the trainer runs (PP=1, ZeRO-1), against a plain
PyTorch AdamW step of the same model in the same run (forward, loss, backward, clip, step).
Reports tokens/s, s/step, model TFLOP/s per device and MFU counted the standard way
(`glm130b.training.flops`: 6·N plus attention per token, recomputation not counted). Runs on
CPU or GPU, one process; medians after warm-up.

    python benchmarks/bench_training.py --config tiny|1b|all [--bf16] [--checkpoint-activations]
    python benchmarks/bench_training.py --config 1b --num-layers 4     # a CPU with < 64 GB

Both steps and a large matmul take turns, round by round, so a machine shared with other work
slows them alike; "DeepSpeed / plain" is the median of the per-round ratios. MFU is against the
device's datasheet peak (`peak_flops`, or --peak-tflops); a CPU has none, so there it is against
the matmul. Each optimizer step takes one micro-batch of random tokens with a [gMASK]-style mask
(first half bidirectional, loss on the second half): the optimizer's share is that of a run
without gradient accumulation.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import sys

import torch

from common import timed
from glm130b.config import GLMConfig
from glm130b.training.collate import Batch
from glm130b.model import GLM
from glm130b.model.masks import AttentionMask
from glm130b.training.options import TrainingConfig
from glm130b.training.recompute import recompute_layers
from glm130b.training.engine import (build_engine, decay_groups, initialize_training, lm_loss,
                                     plain_step)
from glm130b.training.flops import mfu, model_flops_per_token, num_parameters, peak_flops

CONFIGS = {
    "tiny": GLMConfig.from_preset("glm-tiny"),
    # ~1.3B. GeGLU inner size 8/3·h (GLM-130B: 32768 for 12288) rounded up to a multiple of
    # 256: an odd 5461 leaves bf16 rows unaligned and on an H100 sends the MLP's matmuls to
    # pre-Hopper kernels, 16% MFU instead of 24%.
    "1b": GLMConfig(num_layers=24, hidden_size=2048, num_attention_heads=16,
                    inner_hidden_size=5632, vocab_size=32768, max_sequence_length=2048),
}
# (micro-batch, sequence length, timed steps) when not given on the command line.
SHAPES = {("tiny", "cpu"): (8, 256, 10), ("tiny", "cuda"): (32, 256, 20),
          ("1b", "cpu"): (1, 256, 3), ("1b", "cuda"): (4, 2048, 10)}
# Bytes per parameter held at once in fp32: plain PyTorch's weights, gradients and two AdamW
# moments (16), DeepSpeed's the same plus ZeRO's flat copies of weights and gradients (24).
# 47 were measured on CPU with activations and the interpreter.
BYTES_PER_PARAMETER = 40


def random_batch(config: GLMConfig, batch: int, seq: int, device) -> Batch:
    """Random text with a [gMASK] at mid-sequence: the first half is context, the loss is on
    the second half, as the trainer's [gMASK] samples (positions count on)."""
    g = torch.Generator().manual_seed(seq)
    text_vocab = config.vocab_size - 8
    gmask, sop = text_vocab + 1, text_vocab + 4
    context = seq // 2
    tokens = torch.randint(0, text_vocab, (batch, seq), generator=g)
    tokens[:, context - 1], tokens[:, context] = gmask, sop
    targets = torch.randint(0, text_vocab, (batch, seq), generator=g)
    loss_mask = (torch.arange(seq) >= context).float().expand(batch, seq).contiguous()
    positions = torch.arange(seq).expand(batch, seq).contiguous()
    mask = AttentionMask.from_context_lengths(context, seq, batch)
    return Batch(tokens, targets, loss_mask, positions, mask).to(device)


def engine_config(args, micro_batch: int) -> TrainingConfig:
    """The trainer's own defaults (AdamW betas, eps, weight decay, clipping 1.0), ZeRO-1."""
    return TrainingConfig(global_batch_size=micro_batch, micro_batch_size=micro_batch,
                          train_iters=1, zero_stage=1, bf16=args.bf16,
                          recompute_activations=args.checkpoint_activations)


def deepspeed_step(config, training: TrainingConfig, batch):
    """One optimizer step of the engine the trainer builds; returns its loss."""
    engine, _ = build_engine(training, config, training.global_batch_size, None)
    return lambda: plain_step(engine, [batch])


def pytorch_step(config, args, training: TrainingConfig, batch, device):
    """The same step in plain PyTorch: fp32 weights, autocast for bf16, AdamW as the trainer
    builds it, clipping at the engine's 1.0."""
    torch.manual_seed(training.seed)
    model = GLM(config).to(device).train()
    if args.checkpoint_activations:
        recompute_layers(model)
    optimizer = torch.optim.AdamW(decay_groups(model, training.weight_decay), lr=training.lr,
                                  betas=(training.adam_beta1, training.adam_beta2),
                                  eps=training.adam_eps, fused=device.type == "cuda" or None)

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            logits = model(batch.tokens, position_ids=batch.position_ids,
                           attention_mask=batch.attention_mask, parallel_output=True)
        loss = lm_loss(logits, (batch.targets, batch.loss_mask))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def matmul(device, dtype):
    """(call, FLOPs) of square matmuls at a size that fills the device: the achievable peak."""
    n, count = (8192, 10) if device.type == "cuda" else (2048, 1)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    return lambda: [a @ b for _ in range(count)], 2 * n ** 3 * count


def interleaved(calls: dict, device, steps: int, warmup: int) -> tuple[dict, dict]:
    """Seconds of each call per round, the calls taking turns so that a machine shared with
    other work slows them alike; and each call's last result."""
    results = {}
    for _ in range(warmup):
        for name, call in calls.items():
            results[name] = call()
    times = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            def run():
                results[name] = call()
            times[name].append(timed(run, device, repeats=1, warmup=0))
    return times, results


def check_memory(name: str, config: GLMConfig, device) -> None:
    """Refuse in one line a CPU run whose weights and optimizer states cannot fit, rather than
    meet the kernel's out-of-memory killer."""
    if device.type != "cpu":
        return
    need = BYTES_PER_PARAMETER * num_parameters(config)
    have = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise SystemExit(f"error: {name} at {config.num_layers} layers needs about "
                         f"{need / 2 ** 30:.0f} GiB, {have / 2 ** 30:.0f} GiB are free: "
                         f"cut it with --num-layers")


def measure(name: str, args, device, peak) -> dict:
    """One config: both steps timed in turns, and what the table and the JSON line show."""
    micro_batch, seq, steps = SHAPES[name, device.type]
    micro_batch, seq = args.micro_batch_size or micro_batch, args.seq_length or seq
    steps = args.steps or steps
    warmup = args.warmup if args.warmup is not None else (3 if device.type == "cuda" else 1)
    base = CONFIGS[name]
    config = dataclasses.replace(base, attention_impl=args.attention_impl,
                                 num_layers=args.num_layers or base.num_layers,
                                 max_sequence_length=max(seq, base.max_sequence_length))
    check_memory(name, config, device)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    batch = random_batch(config, micro_batch, seq, device)
    training = engine_config(args, micro_batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    square, square_flops = matmul(device, dtype)
    calls = {"matmul": square, "pytorch": pytorch_step(config, args, training, batch, device),
             "deepspeed": deepspeed_step(config, training, batch)}
    print(f"{name}: {warmup} + {steps} rounds of {', '.join(calls)}", file=sys.stderr, flush=True)
    times, losses = interleaved(calls, device, steps, warmup)
    del calls, square
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    median = {k: statistics.median(v) for k, v in times.items()}
    matmul_flops = square_flops / median["matmul"]
    tokens_per_s = micro_batch * seq / median["deepspeed"]
    flops_per_token = model_flops_per_token(config, seq)
    flops, peak = tokens_per_s * flops_per_token, peak or matmul_flops
    return dict(config=name, parameters=num_parameters(config), layers=config.num_layers,
                dtype=str(dtype).removeprefix("torch."), attention=args.attention_impl,
                checkpoint_activations=args.checkpoint_activations, micro_batch=micro_batch,
                seq_length=seq, warmup=warmup, steps=steps,
                deepspeed_s_per_step=median["deepspeed"], tokens_per_s=tokens_per_s,
                model_tflops_per_device=flops / 1e12,
                mfu=mfu(tokens_per_s, flops_per_token, peak), peak_tflops=peak / 1e12,
                matmul_tflops=matmul_flops / 1e12,
                pytorch_s_per_step=median["pytorch"],
                deepspeed_over_pytorch=statistics.median(
                    d / p for d, p in zip(times["deepspeed"], times["pytorch"])),
                deepspeed_loss=float(losses["deepspeed"]), pytorch_loss=float(losses["pytorch"]),
                peak_memory_gib=round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 1)
                if device.type == "cuda" else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="tiny")
    p.add_argument("--steps", type=int, help="timed steps (default: by config and device)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 1 on CPU, 3 on GPU)")
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--seq-length", type=int)
    p.add_argument("--num-layers", type=int, help="cut the config to N layers, where the whole "
                   "model's optimizer states do not fit in memory")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--checkpoint-activations", action="store_true")
    p.add_argument("--attention-impl", choices=("reference", "sdpa"), default="sdpa")
    p.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU")
    args = p.parse_args()

    device = initialize_training(1, 1)  # the group of one DeepSpeed's engine needs
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(
        device, torch.bfloat16 if args.bf16 else torch.float32)
    basis = "--peak-tflops" if args.peak_tflops else "datasheet peak" if peak else \
        "measured matmul peak"
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device {device} ({hardware}), torch {torch.__version__}, "
          f"{'bf16' if args.bf16 else 'fp32'}, {args.attention_impl} attention"
          f"{', activation checkpointing' * args.checkpoint_activations}; MFU vs {basis}")
    print("| config | parameters | micro-batch x seq | DeepSpeed s/step | tokens/s | "
          "TFLOP/s per device | MFU | plain PyTorch s/step | DeepSpeed / plain |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    records = []
    for name in CONFIGS if args.config == "all" else [args.config]:
        r = measure(name, args, device, peak)
        records.append(dict(r, device=str(device), hardware=hardware, peak_basis=basis))
        print(f"| {name} | {r['parameters'] / 1e6:,.1f} M | {r['micro_batch']} x "
              f"{r['seq_length']} | {r['deepspeed_s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | "
              f"{r['model_tflops_per_device']:.3f} | {r['mfu']:.1%} | "
              f"{r['pytorch_s_per_step']:.3f} | {r['deepspeed_over_pytorch']:.2f} |", flush=True)
    for record in records:
        print(json.dumps(record))


if __name__ == "__main__":
    main()
