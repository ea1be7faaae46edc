"""Quantising a model or a checkpoint shard, and the command-line flags for it.

Only the four big matrices of every layer are quantised (reference §5); the embedding (and so
the tied output head), LayerNorms and biases keep the compute dtype.

Loading order, as the reference's initialize.py: an FP checkpoint is loaded first and then
quantised; with --from-quantized-checkpoint the (meta) model is quantised first, to have the
int8 parameters, and the quantised checkpoint is loaded into it.
"""
from __future__ import annotations

import argparse
import re
from typing import Optional

import torch
from torch import nn
from tqdm import tqdm

from ..errors import UsageError
from .quantized_linear import quantize_linear
from .packing import quantize_weight

QUANTIZED_LINEARS = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
                     "mlp.dense_4h_to_h")
_QUANTIZED_KEY = re.compile(r"transformer\.layers\.\d+\.(%s)\.weight$"
                            % "|".join(re.escape(n) for n in QUANTIZED_LINEARS))


def add_quantization_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("quantization")
    g.add_argument("--quantization-bit-width", type=int, choices=(4, 8), default=None,
                   help="weight-only INT8 / INT4 quantisation of the four big matrices per layer")
    g.add_argument("--from-quantized-checkpoint", action="store_true",
                   help="--load names a checkpoint already quantised at --quantization-bit-width")
    return parser


def check_quantization_args(bits: Optional[int], from_quantized_checkpoint: bool,
                            load: Optional[str]) -> None:
    """The flag combinations that cannot work, as one-line usage errors."""
    if from_quantized_checkpoint and bits is None:
        raise UsageError("--from-quantized-checkpoint needs --quantization-bit-width 4 or 8")
    if from_quantized_checkpoint and not load:
        raise UsageError("--from-quantized-checkpoint needs --load")


def quantize_model(model: nn.Module, bits: int, device: Optional[torch.device] = None) -> nn.Module:
    """Replace the four big linears of every layer, in place, one at a time so the FP weights
    are freed as they go. `device`: where to quantise, and keep, the new weights (a GPU does
    130B in seconds); default where each weight is. A meta model gets meta int8 parameters
    (shapes to load a quantised checkpoint into; no `device` then)."""
    quiet = True if next(model.parameters()).is_meta else None  # None: a bar on terminals
    for layer in tqdm(model.transformer.layers, desc=f"quantising to INT{bits}", unit="layer",
                      disable=quiet):
        for path in QUANTIZED_LINEARS:
            parent, name = path.split(".")
            module = layer.get_submodule(parent)
            linear = getattr(module, name)
            if device is not None:
                linear.to(device)
            setattr(module, name, quantize_linear(linear, bits))
    return model


def quantize_state_dict(state: dict[str, torch.Tensor], bits: int,
                        device: Optional[torch.device] = None) -> dict[str, torch.Tensor]:
    """One tensor-parallel shard's state dict with the four big weights per layer quantised:
    `<key>` becomes int8 and `<key>_scale` (in the weight's dtype) joins it, as reference §4.1.
    Quantise the shard of the target degree, not a merged model: row-parallel scales depend on
    the shard. Each result lies where its weight did; `device` is where the arithmetic runs."""
    out = {}
    for key, tensor in state.items():
        if _QUANTIZED_KEY.search(key) is None:
            out[key] = tensor
            continue
        if f"{key}_scale" in state or not tensor.is_floating_point():
            raise ValueError(f"{key} is already quantised")
        qweight, scale = quantize_weight(tensor.to(device or tensor.device), bits)
        out[key], out[f"{key}_scale"] = qweight.to(tensor.device), scale.to(tensor.device)
    return out
