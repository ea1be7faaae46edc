"""The three things evaluation asks of the model (reference §7.4): log-probabilities of
multiple-choice answers, the loss of language-model windows, and generated answers.

Log-probabilities and losses come from `vocab_parallel_cross_entropy` on each rank's slice of
the logits, so tensor-parallel ranks never gather the vocabulary; every rank of a replica gets
the same numbers.
"""
from __future__ import annotations

import torch
from torch import nn

from ..generation import batch_filling_sequence
from ..generation.batch import model_device
from ..model import AttentionMask
from ..parallel import vocab_parallel_cross_entropy
from .datasets import ChoiceSample, Window, collate_choices, collate_windows


@torch.no_grad()
def choice_log_probs(model, samples: list[ChoiceSample]) -> list[list[float]]:
    """Per sample, per choice: the summed log-probability of the choice's tokens."""
    device = model_device(model)
    tokens, positions, mask = collate_choices(samples, device)
    logits = model(tokens, positions, mask, parallel_output=True)
    rows, at, targets = [], [], []
    for row, s in enumerate(samples):
        for where, target in zip(s.score_at, s.targets):
            rows += [row] * len(where)
            at += where
            targets += target
    picked = logits[torch.tensor(rows, device=device), torch.tensor(at, device=device)]
    targets = torch.tensor(targets, device=device)
    log_probs = (-vocab_parallel_cross_entropy(picked, targets)).tolist()
    scores, i = [], 0
    for s in samples:
        per_choice = []
        for target in s.targets:
            per_choice.append(sum(log_probs[i:i + len(target)]))
            i += len(target)
        scores.append(per_choice)
    return scores


@torch.no_grad()
def window_losses(model, windows: list[Window]) -> list[float]:
    """Per window: the summed cross entropy (fp32) of its scored tokens."""
    tokens, positions, mask, targets = collate_windows(windows, model_device(model))
    logits = model(tokens, positions, mask, parallel_output=True)
    return vocab_parallel_cross_entropy(logits, targets).sum(dim=1).tolist()


class Causal(nn.Module):
    """The model with contexts attending causally, for unidirectional tasks: the decoding loop
    marks every context bidirectional, this hands the model a mask without that part."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, positions, mask: AttentionMask, kv_cache=None):
        return self.model(tokens, positions, AttentionMask(torch.zeros_like(mask.context),
                                                           mask.segment_ids), kv_cache=kv_cache)


class GenerationBudget:
    """A strategy whose rows all stop after `max_gen_length` new tokens, whatever their
    context lengths (the decoding loop's own budget counts the context too)."""

    def __init__(self, strategy, max_gen_length: int):
        self.strategy, self.max_gen_length, self.step = strategy, max_gen_length, 0

    def __getattr__(self, name):
        return getattr(self.strategy, name)

    def start(self, batch_size: int, device) -> None:
        self.step = 0
        self.strategy.start(batch_size, device)

    def forward(self, logits, tokens, last=None):
        self.step += 1
        last = torch.full_like(last, self.step >= self.max_gen_length)
        return self.strategy.forward(logits, tokens, last)


@torch.no_grad()
def generate_continuations(model, contexts: list[list[int]], mask_positions: list, strategy,
             max_gen_length: int, unidirectional: bool = False) -> list[list[list[int]]]:
    """Per context (ending in [sop]): the generated ids of each returned sequence, best first,
    without the context and without a final end token."""
    if unidirectional:
        model = Causal(model)
    width = max(map(len, contexts)) + max_gen_length
    results = batch_filling_sequence(model, contexts, mask_positions,
                                     GenerationBudget(strategy, max_gen_length), width)
    outputs = []
    for context, sequences in zip(contexts, results):
        row = []
        for seq in sequences:
            generated = seq[len(context):]
            if generated and generated[-1] in strategy.end_tokens:
                generated = generated[:-1]
            row.append(generated)
        outputs.append(row)
    return outputs
