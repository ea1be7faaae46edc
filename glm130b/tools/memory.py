"""How much memory a model takes per GPU: weights, key/value cache and activations.

Weights are counted from the model's own parameter shapes: it is built on the meta device (no
memory, seconds even for 130B), quantised there too with --bits, and each parameter's split
annotation from `glm130b.parallel` says whether a tensor-parallel rank holds all of it or 1/TP.
Integer (quantised) weights take their own size; everything else takes --dtype.

    python -m glm130b.tools.memory --preset glm-130b --tp 8 --dtype fp16
    python -m glm130b.tools.memory --preset glm-130b --tp 4 --bits 4 --batch 1 --seq 2048

GB are 10^9 bytes, as the reference's 257 / 130 / 70 GB of weights count them; a card's label
("24 GB", "80 GB") counts 2^30 bytes, so --gpu-memory does too. Not counted: the CUDA context
and allocator slack (around a GB), and the sampler's copies of the last logits.
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import torch

from ..cli import run
from ..errors import UsageError
from ..config import PRESETS, GLMConfig
from ..model import GLM
from ..quantization import quantize_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The reference's hardware table (§5): RTX 2080 Ti, RTX 3090, V100, A100 40/80 GB.
CARDS_GB = (11, 24, 32, 40, 80)


def meta_model(config: GLMConfig, bits: Optional[int] = None) -> GLM:
    with torch.device("meta"):
        model = GLM(config)
    return quantize_model(model, bits) if bits else model


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _check_split(n: int, tp: int) -> None:
    if n % tp:
        raise ValueError(f"a dimension of {n} does not split over {tp} ranks")


def weight_bytes_per_gpu(config: GLMConfig, tensor_parallel_size: int = 1,
                         dtype: torch.dtype = torch.float16, bits: Optional[int] = None) -> int:
    """Bytes of weights one tensor-parallel rank holds (split tensors divided, the rest whole);
    with `bits`, the four big matrices per layer are int8 (INT4 packed two per byte) with
    their row scales in `dtype`."""
    itemsize, total = _itemsize(dtype), 0
    for p in meta_model(config, bits).parameters():
        n = p.numel()
        if getattr(p, "tensor_model_parallel", False):
            _check_split(p.shape[p.partition_dim], tensor_parallel_size)
            n //= tensor_parallel_size
        total += n * (itemsize if p.is_floating_point() else p.element_size())
    return total


def kv_cache_bytes_per_gpu(config: GLMConfig, tensor_parallel_size: int, batch: int, seq: int,
                           dtype: torch.dtype = torch.float16) -> int:
    """Keys and values of every layer for `seq` tokens; a rank keeps its own heads."""
    _check_split(config.num_attention_heads, tensor_parallel_size)
    per_token = 2 * config.num_layers * config.hidden_size // tensor_parallel_size
    return per_token * batch * seq * _itemsize(dtype)


def activation_bytes_per_gpu(config: GLMConfig, tensor_parallel_size: int, batch: int, seq: int,
                             dtype: torch.dtype = torch.float16, bits: Optional[int] = None) -> int:
    """Estimated peak of the tensors alive at once in one forward over `seq` new tokens (the
    prompt, the worst step of generation), on the reference attention path:

    the residual stream and its LayerNorm [b, s, h], plus the widest of
      attention: qkv, rotated q and k, scaled q [b, s, 6h/TP]; three fp32 score tensors
                 (scores, masked, softmax) [b, heads/TP, s, s]
      GeGLU:     [b, s, 2·inner/TP] up-projection, GELU and product [b, s, inner/TP] each
      logits:    this rank's [b, s, vocab/TP] and the gathered [b, s, vocab]
    plus, when quantised, one dequantised weight matrix (the pure path makes one at a time;
    the fused GPU kernel needs none)."""
    tp, h, item = tensor_parallel_size, config.hidden_size, _itemsize(dtype)
    tokens = batch * seq
    stream = 2 * tokens * h * item
    attention = (6 * tokens * h // tp * item
                 + 3 * batch * config.num_attention_heads // tp * seq * seq * 4)
    mlp = 4 * tokens * config.inner_hidden_size // tp * item
    logits = tokens * (config.vocab_size // tp + config.vocab_size) * item
    h_to_4h = 2 * config.inner_hidden_size * h  # the widest of the quantised matrices
    dequantized = h_to_4h // tp * item if bits else 0
    return stream + max(attention, mlp, logits) + dequantized


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="glm-130b")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16",
                        help="compute dtype: weights (unless --bits), scales, cache, activations")
    parser.add_argument("--bits", type=int, choices=(4, 8), default=None,
                        help="INT4 / INT8 weight-only quantisation of the big matrices")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=None,
                        help="tokens per sequence (default: the model's maximum)")
    parser.add_argument("--gpu-memory", type=float, default=None,
                        help="GB per GPU as the card is labelled; default: the reference's cards")
    args = parser.parse_args(argv)
    config = GLMConfig.from_preset(args.preset)
    seq, dtype = args.seq or config.max_sequence_length, DTYPES[args.dtype]
    if args.tp < 1 or args.batch < 1 or seq < 1:
        raise UsageError("--tp, --batch and --seq must be positive")
    start = time.perf_counter()
    params = meta_model(config).num_parameters()
    built = time.perf_counter() - start
    try:
        weights = weight_bytes_per_gpu(config, args.tp, dtype, args.bits)
        cache = kv_cache_bytes_per_gpu(config, args.tp, args.batch, seq, dtype)
        acts = activation_bytes_per_gpu(config, args.tp, args.batch, seq, dtype, args.bits)
    except ValueError as e:
        raise UsageError(str(e)) from None
    total = weights + cache + acts
    gb = lambda n: f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
    precision = f"INT{args.bits} ({args.dtype} elsewhere)" if args.bits else args.dtype
    print(f"{args.preset}: {params / 1e9:.1f} B parameters ({params:,}), built on meta in "
          f"{built:.1f} s")
    print(f"weights per GPU at TP={args.tp} in {precision}: {gb(weights)} "
          f"({weights / 2**30:.1f} GiB); all GPUs together {gb(weights * args.tp)}")
    print(f"key/value cache, batch {args.batch} x {seq} tokens: {gb(cache)}")
    print(f"activations, peak of a {seq}-token forward (estimate): {gb(acts)}")
    print(f"total per GPU: {gb(total)} ({total / 2**30:.1f} GiB)")
    for card in ([args.gpu_memory] if args.gpu_memory else CARDS_GB):
        spare = card * 2**30 - total
        verdict = f"yes, {gb(spare)} to spare" if spare >= 0 else f"no, {gb(-spare)} short"
        print(f"fits a {card:g} GB GPU: {verdict}")


if __name__ == "__main__":
    run(main)
