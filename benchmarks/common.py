"""What every benchmark shares: the median wall time of a call after warm-up, synchronising the
GPU around each call so queued kernels are counted."""
from __future__ import annotations

import statistics
import time

import torch


def timed(fn, device=torch.device("cpu"), repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def add_device_args(parser, preset: bool = True) -> None:
    """--device, --dtype and, for whole-model benchmarks, --preset."""
    from glm130b.config import PRESETS
    from glm130b.tools.memory import DTYPES
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    if preset:
        parser.add_argument("--preset", choices=sorted(PRESETS), default="glm-tiny")


def build_model(args):
    """The preset's model, seeded, on the chosen device and dtype, in eval mode."""
    from glm130b import GLM, GLMConfig
    from glm130b.tools.memory import DTYPES
    config = GLMConfig.from_preset(args.preset)
    torch.manual_seed(0)
    return GLM(config).to(torch.device(args.device), DTYPES[args.dtype]).eval()
