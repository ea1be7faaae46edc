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
