"""Random streams for tensor parallelism.

Dropout on activations that every rank holds whole (the residual stream, the embedding) must
draw the same mask on every rank of a tensor-parallel group, or the replicas drift apart: it
uses the default generator, seeded alike. Dropout on a rank's own shard (its attention heads)
must differ between ranks, or the split model would drop the same pattern in every shard: it
runs inside `get_rng_tracker().fork()`, a second stream seeded per rank, as Megatron does.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from .state import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

MODEL_PARALLEL_RNG = "model-parallel-rng"


def _get_state() -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_state(state: tuple[torch.Tensor, Optional[torch.Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


class RNGStatesTracker:
    """Named generator states (CPU, and the current GPU's when CUDA is in use) that code can
    switch to for a block and back."""

    def __init__(self):
        self.states: dict[str, tuple] = {}

    def reset(self) -> None:
        self.states = {}

    def add(self, name: str, seed: int) -> None:
        if name in self.states:
            raise ValueError(f"random stream {name!r} already exists")
        outside = _get_state()
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed(seed)
        self.states[name] = _get_state()
        _set_state(outside)

    def get_states(self) -> dict[str, tuple]:
        """For checkpoints: exact resume restores every stream."""
        return dict(self.states)

    def set_states(self, states: dict[str, tuple]) -> None:
        self.states = dict(states)

    @contextlib.contextmanager
    def fork(self, name: str = MODEL_PARALLEL_RNG):
        if name not in self.states:
            if get_tensor_model_parallel_world_size() == 1:
                yield  # one rank: its shard is the whole tensor, the default stream serves
                return
            raise RuntimeError(f"random stream {name!r} is not seeded: call "
                               "glm130b.parallel.model_parallel_manual_seed(seed) after "
                               "initialize_model_parallel")
        outside = _get_state()
        _set_state(self.states[name])
        try:
            yield
        finally:
            self.states[name] = _get_state()
            _set_state(outside)


_TRACKER = RNGStatesTracker()


def get_rng_tracker() -> RNGStatesTracker:
    return _TRACKER


def model_parallel_manual_seed(seed: int) -> None:
    """Seed the default stream alike on every rank (initialisation draws whole matrices from it,
    so the model is the same at any degree) and the sharded-dropout stream per tensor-parallel
    rank, with Megatron's offset."""
    torch.manual_seed(seed)
    _TRACKER.reset()
    _TRACKER.add(MODEL_PARALLEL_RNG, seed + 2718 + get_tensor_model_parallel_rank())
