"""Activation recomputation: a layer's activations are recomputed in the backward pass instead
of kept, trading compute for memory. (`--checkpoint-activations` is the reference's flag for
it; in this package "checkpoint" means only what is saved to disk.)"""
from __future__ import annotations

from typing import Callable

import torch
import torch.utils.checkpoint

from ..model import GLM
from ..parallel import get_rng_tracker


def recompute(function: Callable, *args):
    """`function(*args)`, its activations recomputed in the backward pass instead of kept (what
    Megatron and DeepSpeed call activation checkpointing), with dropout replayed exactly: torch
    restores the default generator for the recomputation, this restores the tensor-parallel
    stream too."""
    tracker = get_rng_tracker()
    before = tracker.get_states()
    calls = []

    def run(*inputs):
        if not calls:
            calls.append(1)
            return function(*inputs)
        after = tracker.get_states()
        tracker.set_states(before)
        try:
            return function(*inputs)
        finally:
            tracker.set_states(after)
    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


def recompute_layers(model: GLM) -> None:
    """Recompute each layer's activations in the backward pass (the plain model; the pipeline
    does this itself). Instance attributes leave the parameter names untouched."""
    for layer in model.transformer.layers:
        forward = layer.forward
        layer.forward = lambda *a, _f=forward: recompute(_f, *a)
