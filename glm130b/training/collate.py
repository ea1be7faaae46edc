"""Samples -> the batch the model takes: `model(b.tokens, position_ids=b.position_ids,
attention_mask=b.attention_mask)`, loss on `b.targets` weighted by `b.loss_mask`.

Every row is padded to seq_length with 0 (tokens, targets, positions), as the reference's
collator pads; padding has loss weight 0 and sits in a segment of its own, so no real token
attends to it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from glm130b.data.infilling import Sample
from glm130b.model.masks import AttentionMask
from glm130b.parallel import get_data_parallel_rank, get_data_parallel_world_size

PAD_ID = 0


@dataclass
class Batch:
    tokens: torch.Tensor        # [b, s] int64
    targets: torch.Tensor       # [b, s] int64
    loss_mask: torch.Tensor     # [b, s] float32, 1 where the loss counts
    position_ids: torch.Tensor  # [b, s] int64
    attention_mask: AttentionMask

    def to(self, device) -> "Batch":
        mask = self.attention_mask
        segments = None if mask.segment_ids is None else mask.segment_ids.to(device)
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if f.name != "attention_mask"}
        return Batch(**moved, attention_mask=AttentionMask(mask.context.to(device), segments))


def collate(samples: list[Sample], seq_length: int) -> Batch:
    too_long = [len(s) for s in samples if len(s) > seq_length]
    if too_long:
        raise ValueError(f"a sample of {too_long[0]} tokens does not fit seq_length {seq_length}")
    rows = len(samples)
    tokens, targets, positions = (torch.full((rows, seq_length), PAD_ID, dtype=torch.long)
                                  for _ in range(3))
    loss_mask = torch.zeros(rows, seq_length)
    for i, s in enumerate(samples):
        n = len(s)
        tokens[i, :n] = torch.from_numpy(s.tokens)
        targets[i, :n] = torch.from_numpy(s.targets)
        positions[i, :n] = torch.from_numpy(s.position_ids)
        loss_mask[i, :n] = torch.from_numpy(s.loss_mask)
    if all(len(s.segments) == 1 for s in samples):
        # One prefix-LM per row: padding comes after every real token, so causality alone
        # keeps it out of their view, and attention paths may skip segment ids.
        mask = AttentionMask.from_context_lengths([s.segments[0][1] for s in samples], seq_length)
    else:
        mask = AttentionMask.packed([s.segments for s in samples], seq_length)
    return Batch(tokens, targets, loss_mask, positions, mask)


def micro_batches(sampler, start: int, global_batch: int, micro_batch: int, seq_length: int,
                  device):
    """This data-parallel rank's micro-batches of the global batch that begins at sample
    `start`: rank r takes the r-th contiguous share, in micro-batches."""
    share = global_batch // get_data_parallel_world_size()
    first = start + get_data_parallel_rank() * share
    for m in range(0, share, micro_batch):
        samples = [sampler[k] for k in range(first + m, first + m + micro_batch)]
        yield collate(samples, seq_length).to(device)
