"""Model FLOPs utilisation, counted the standard way (PaLM, appendix B).

Training costs 6 FLOPs per parameter per token (a multiply-add forward, two backward) plus
the attention scores and their use, 12·L·h·s per token, which no parameter accounts for.
Recomputation is not counted: MFU is the work the model needs, not what the hardware did.
The GLM-130B paper's own figures check it: 48 samples/s of 2048 tokens on 768 A100s gives
the 32.5% MFU it reports.
"""
from __future__ import annotations

from typing import Optional

from ..config import GLMConfig


def num_parameters(config: GLMConfig) -> int:
    """Parameters of `GLM(config)`, counted from the shapes: the output head is the embedding
    (tied), so the vocabulary matrix counts once."""
    h, inner = config.hidden_size, config.inner_hidden_size
    layer = (2 * 2 * h                      # input and post-attention LayerNorm
             + 3 * h * h + 3 * h            # fused query_key_value
             + h * h + h                    # attention output dense
             + 2 * inner * h + 2 * inner    # GeGLU up-projection (both halves)
             + inner * h + h)               # down-projection
    return config.vocab_size * h + config.num_layers * layer + 2 * h


def model_flops_per_token(config: GLMConfig, seq_length: int) -> float:
    return 6.0 * num_parameters(config) + 12.0 * config.num_layers * config.hidden_size * seq_length


# Dense (not sparse) peaks per device: (16-bit, fp32 via TF32). First match of the name wins.
PEAKS = (("H100 PCIe", 756.0e12, 378.0e12),
         ("H100", 989.4e12, 494.7e12),
         ("H200", 989.4e12, 494.7e12),
         ("A100", 312.0e12, 156.0e12))


def peak_flops(device, dtype) -> Optional[float]:
    """Peak FLOP/s of `device` for matmuls in `dtype`; None for CPUs and unknown GPUs."""
    import torch
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, half, single in PEAKS:
        if key in name:
            return half if dtype in (torch.float16, torch.bfloat16) else single
    return None


def mfu(tokens_per_s_per_device: float, flops_per_token: float,
        peak: Optional[float]) -> Optional[float]:
    return tokens_per_s_per_device * flops_per_token / peak if peak else None
