"""Arguments and start-up shared by the inference entry points (generate, evaluate, serve):
the model under the reference's flag names, the tokenizer, the checkpoint, precision and
tensor parallelism, as the reference's `initialize.py` gathers them."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

import torch

from .checkpoint import load_checkpoint
from .cli import add_runtime_args
from .config import GLMConfig, add_model_args
from .model import GLM
from .parallel import (get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size,
                       initialize_distributed, model_parallel_manual_seed)
from .quantization import add_quantization_args, check_quantization_args, quantize_model
from .tokenization import add_tokenizer_args, check_vocab_size, get_tokenizer


def add_initialization_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_model_args(parser)
    add_tokenizer_args(parser)
    add_quantization_args(parser)
    g = parser.add_argument_group("checkpoint and runtime")
    g.add_argument("--load", help="checkpoint folder in the reference layout (holds 'latest')")
    g.add_argument("--skip-init", action="store_true",
                   help="accepted for the reference's scripts: a loaded model is never initialised")
    g.add_argument("--sequential-initialization", action="store_true",
                   help="load the checkpoint one tensor-parallel rank at a time, bounding host "
                        "memory to one shard")
    g.add_argument("--device", default=None,
                   help="default: cuda:<local rank> if available, else cpu")
    return add_runtime_args(parser)


@dataclass
class RuntimeConfig:
    """Where the weights come from and how the model runs: `add_initialization_args`' flags
    other than the model's and the tokenizer's, under their names."""
    load: Optional[str] = None          # None: random weights
    model_parallel_size: int = 1
    fp16: bool = False
    bf16: bool = False
    sequential_initialization: bool = False
    seed: int = 1234
    device: Optional[str] = None        # None: cuda:<local rank> if available, else cpu
    local_rank: Optional[int] = None
    quantization_bit_width: Optional[int] = None
    from_quantized_checkpoint: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.fp16 else torch.bfloat16 if self.bf16 else torch.float32


def initialize_model(config: GLMConfig, runtime: RuntimeConfig) -> GLM:
    """Build the model; with `load`, on the meta device and then filled from the checkpoint
    (no random init, no second copy of the weights). Quantisation follows the reference's
    order: an FP checkpoint is loaded, cast, then quantised on the target device; with
    `from_quantized_checkpoint` the meta model is quantised first to take the int8 tensors."""
    bits, prequantized = runtime.quantization_bit_width, runtime.from_quantized_checkpoint
    check_quantization_args(bits, prequantized, runtime.load)
    tp = runtime.model_parallel_size
    device = initialize_distributed(tp, device=runtime.device, local_rank=runtime.local_rank)
    model_parallel_manual_seed(runtime.seed)
    assert get_tensor_model_parallel_world_size() == tp
    with torch.device("meta" if runtime.load else "cpu"):
        model = GLM(config)
    if prequantized:
        quantize_model(model, bits)
    rank = get_tensor_model_parallel_rank()
    for turn in range(tp) if runtime.sequential_initialization else [rank]:
        if turn == rank:
            if runtime.load:
                load_checkpoint(model, runtime.load)
            model = model.to(dtype=runtime.dtype)  # int8 weights stay int8
            if bits and not prequantized:
                quantize_model(model, bits, device=device)
            model = model.to(device)
        if runtime.sequential_initialization and torch.distributed.is_initialized():
            torch.distributed.barrier()
    return model.eval()


def initialize_model_and_tokenizer(config: GLMConfig, runtime: RuntimeConfig,
                                   tokenizer_type: str, tokenizer_model: Optional[str] = None):
    tokenizer = get_tokenizer(tokenizer_type, tokenizer_model)
    check_vocab_size(tokenizer, config.vocab_size)  # before loading any weights
    return initialize_model(config, runtime), tokenizer
