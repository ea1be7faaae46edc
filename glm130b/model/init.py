"""DeepNorm initialisation (reference §1.4): Xavier-normal, β-scaled on V, the attention output
and both FFN matrices. Each function returns an init method for the *global* weight; the
parallel layers shard it afterwards, so the numbers do not depend on the TP degree."""
from __future__ import annotations

import math

import torch


def xavier_normal(gain: float, fan_in: int, fan_out: int):
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))

    def init(weight: torch.Tensor) -> None:
        torch.nn.init.normal_(weight, 0.0, std)
    return init


def fused_qkv(hidden_size: int, num_heads: int, beta: float):
    """Rows are laid out per head as [q_h; k_h; v_h]; q and k get gain 1 and v gets β, each as a
    [hidden, hidden] Xavier matrix. (The reference's training code scaled row-thirds of each TP
    shard instead, which misses the V rows; the paper means V.)"""
    std = math.sqrt(2.0 / (2 * hidden_size))

    def init(weight: torch.Tensor) -> None:
        torch.nn.init.normal_(weight, 0.0, std)
        with torch.no_grad():
            weight.view(num_heads, 3, -1, weight.shape[-1])[:, 2] *= beta
    return init


def normal(std: float):
    def init(weight: torch.Tensor) -> None:
        torch.nn.init.normal_(weight, 0.0, std)
    return init
