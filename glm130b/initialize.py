"""Arguments and start-up shared by the inference entry points (generate, evaluate, serve):
the model under the reference's flag names, the tokenizer, the checkpoint, precision and
tensor parallelism, as the reference's `initialize.py` gathers them."""
from __future__ import annotations

import argparse

import torch

from .checkpoint import load_checkpoint
from .cli import add_runtime_args, model_config
from .config import add_model_args
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
    g.add_argument("--device", default=None, help="default: cuda:<local rank> if available, else cpu")
    return add_runtime_args(parser)


def model_dtype(args: argparse.Namespace) -> torch.dtype:
    return torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else torch.float32


def initialize_model(args: argparse.Namespace) -> GLM:
    """Build the model; with --load, on the meta device and then filled from the checkpoint
    (no random init, no second copy of the weights). Quantisation follows the reference's
    order: an FP checkpoint is loaded, cast, then quantised on the target device; with
    --from-quantized-checkpoint the meta model is quantised first to take the int8 tensors."""
    check_quantization_args(args)
    device = initialize_distributed(args.model_parallel_size, device=args.device,
                                    local_rank=args.local_rank)
    config = model_config(args)
    model_parallel_manual_seed(args.seed)
    assert get_tensor_model_parallel_world_size() == args.model_parallel_size
    bits, prequantized = args.quantization_bit_width, args.from_quantized_checkpoint
    with torch.device("meta" if args.load else "cpu"):
        model = GLM(config)
    if prequantized:
        quantize_model(model, bits)
    tp, rank = args.model_parallel_size, get_tensor_model_parallel_rank()
    for turn in range(tp) if args.sequential_initialization else [rank]:
        if turn == rank:
            if args.load:
                load_checkpoint(model, args.load)
            model = model.to(dtype=model_dtype(args))  # int8 weights stay int8
            if bits and not prequantized:
                quantize_model(model, bits, device=device)
            model = model.to(device)
        if args.sequential_initialization and torch.distributed.is_initialized():
            torch.distributed.barrier()
    return model.eval()


def initialize_model_and_tokenizer(args: argparse.Namespace):
    tokenizer = get_tokenizer(args.tokenizer_type, args.tokenizer_model)
    check_vocab_size(tokenizer, model_config(args).vocab_size)  # before loading any weights
    return initialize_model(args), tokenizer
