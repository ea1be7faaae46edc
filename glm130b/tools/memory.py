"""How much memory a model's weights take per GPU, from its own parameter shapes.

The model is built on the meta device (no memory, seconds even for 130B); each parameter's
split annotation from `glm130b.parallel` says whether a tensor-parallel rank holds all of it or
1/TP of it.

    python -m glm130b.tools.memory --preset glm-130b --tp 8 --dtype fp16
"""
from __future__ import annotations

import argparse
import time

import torch

from ..config import PRESETS, GLMConfig
from ..model import GLM

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def meta_model(config: GLMConfig) -> GLM:
    with torch.device("meta"):
        return GLM(config)


def weight_bytes_per_gpu(config: GLMConfig, tensor_parallel_size: int = 1,
                         dtype: torch.dtype = torch.float16) -> int:
    """Bytes of weights one tensor-parallel rank holds (split tensors divided, the rest whole)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    total = 0
    for p in meta_model(config).parameters():
        n = p.numel()
        if getattr(p, "tensor_model_parallel", False):
            if p.shape[p.partition_dim] % tensor_parallel_size:
                raise ValueError(f"a dimension of {p.shape[p.partition_dim]} does not split over "
                                 f"{tensor_parallel_size} ranks")
            n //= tensor_parallel_size
        total += n * itemsize
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="glm-130b")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    args = parser.parse_args(argv)
    config = GLMConfig.from_preset(args.preset)
    start = time.perf_counter()
    params = meta_model(config).num_parameters()
    try:
        per_gpu = weight_bytes_per_gpu(config, args.tp, DTYPES[args.dtype])
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    print(f"{args.preset}: {params / 1e9:.1f} B parameters "
          f"({params:,}), built on meta in {time.perf_counter() - start:.1f} s")
    print(f"weights per GPU at TP={args.tp} in {args.dtype}: {per_gpu / 1e9:.1f} GB "
          f"({per_gpu / 2**30:.1f} GiB); all GPUs together "
          f"{per_gpu * args.tp / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
