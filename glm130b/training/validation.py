"""Validation and test loss on held-out documents (`--split`): `--eval-iters` global batches of
the same samples every time (samples 0, 1, ... of the held-out part's sampler), the loss of
training (`lm_loss`) without gradient and without dropout, averaged over every micro-batch of
every data-parallel rank.
"""
from __future__ import annotations

import math

import torch

from ..parallel import get_data_parallel_world_size
from .collate import micro_batches
from .engine import batch_loss, data_parallel_mean
from .options import TrainingConfig
from .pipeline import pipeline_inputs

PPL_CAP = 20.0  # Megatron's: exp of a larger loss says nothing more and may overflow


def perplexity(loss: float) -> float:
    return math.exp(min(loss, PPL_CAP))


def evaluate(training: TrainingConfig, engine, is_pipeline: bool, sampler, device) -> float:
    """The mean loss over `eval_iters` global batches of `sampler`'s first samples. The global
    batch is the full one whatever the ramp-up, so that every validation sees the same set."""
    batch, losses = training.global_batch_size, []
    for i in range(training.eval_iters):
        batches = micro_batches(sampler, i * batch, batch, training.micro_batch_size,
                                training.seq_length, device)
        if is_pipeline:
            losses.append(_pipeline_loss(engine, batches, training, batch))
        else:
            losses.append(_plain_loss(engine, batches))
    return sum(losses) / len(losses)


def _plain_loss(engine, batches) -> float:
    engine.eval()
    try:
        with torch.no_grad():
            losses = [batch_loss(engine, b) for b in batches]
    finally:
        engine.train()
    return float(data_parallel_mean(torch.stack(losses).mean()))


def _pipeline_loss(engine, batches, training: TrainingConfig, batch: int) -> float:
    # eval_batch averages over its micro-batches and the data-parallel ranks, and broadcasts
    # the last stage's loss to every stage.
    count = batch // (training.micro_batch_size * get_data_parallel_world_size())
    try:
        loss = engine.eval_batch(data_iter=((pipeline_inputs(b), (b.targets, b.loss_mask))
                                            for b in batches), num_micro_batches=count)
    finally:
        engine.module.train()
    return float(loss)
