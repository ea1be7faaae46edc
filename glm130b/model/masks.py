"""Attention masks and position ids for GLM's blank infilling (reference §2).

A GLM sequence is a context that attends to itself in both directions, followed by generated
tokens that attend to the whole context and causally to each other. Packed sequences repeat
that pattern per segment, with no attention across segments. `AttentionMask` describes this
compactly; `dense()` makes the reference's [b, 1, q, k] boolean form (True = blocked) only
where a path needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch


@dataclass
class AttentionMask:
    """Key j is visible to query i when both sit in the same segment and j is in that segment's
    bidirectional context or j <= i.

    context:     [b, s] bool, True for tokens in their segment's bidirectional part.
    segment_ids: [b, s] int, or None for one segment per row.
    """
    context: torch.Tensor
    segment_ids: Optional[torch.Tensor] = None

    @classmethod
    def from_context_lengths(cls, context_lengths: Union[int, Sequence[int], torch.Tensor],
                             seq_len: int, batch_size: int = 1,
                             device: Optional[torch.device] = None) -> "AttentionMask":
        """One segment per row whose first `context_lengths[i]` tokens are bidirectional
        (0 = unidirectional, i.e. fully causal)."""
        lengths = torch.as_tensor(context_lengths, device=device).reshape(-1)
        if lengths.numel() == 1:
            lengths = lengths.expand(batch_size)
        context = torch.arange(seq_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)
        return cls(context)

    @classmethod
    def packed(cls, segments: Sequence[Sequence[tuple[int, int]]], seq_len: int,
               device: Optional[torch.device] = None) -> "AttentionMask":
        """Rows of (segment length, context length) pairs laid end to end; positions after the
        last segment form a padding segment of their own."""
        context = torch.zeros(len(segments), seq_len, dtype=torch.bool)
        segment_ids = torch.empty(len(segments), seq_len, dtype=torch.long)
        for row, pieces in enumerate(segments):
            start = 0
            for sid, (length, ctx) in enumerate(pieces):
                if ctx > length:
                    raise ValueError(f"context length {ctx} exceeds segment length {length}")
                segment_ids[row, start:start + length] = sid
                context[row, start:start + ctx] = True
                start += length
            if start > seq_len:
                raise ValueError(f"segments of row {row} cover {start} > {seq_len} tokens")
            segment_ids[row, start:] = len(pieces)
        return cls(context.to(device), segment_ids.to(device))

    def dense(self, query_start: int = 0, query_length: Optional[int] = None) -> torch.Tensor:
        """[b, 1, q, k] bool, True = blocked, for queries query_start .. query_start+q-1 against
        all keys (the cached ones included)."""
        key_length = self.context.shape[1]
        query_length = key_length - query_start if query_length is None else query_length
        device = self.context.device
        k = torch.arange(key_length, device=device)
        q = torch.arange(query_start, query_start + query_length, device=device)
        visible = (k.unsqueeze(0) <= q.unsqueeze(1)).unsqueeze(0) | self.context.unsqueeze(1)
        if self.segment_ids is not None:
            seg = self.segment_ids
            visible = visible & (seg[:, query_start:query_start + query_length, None]
                                 == seg[:, None, :])
        return ~visible.unsqueeze(1)


def dense_mask(mask: Union[AttentionMask, torch.Tensor, None], batch_size: int, query_length: int,
               past_length: int, device: torch.device) -> torch.Tensor:
    """Any accepted mask form -> [b, 1, q, k] bool (True = blocked). None means causal.

    A mask may describe more tokens than have been seen so far (one mask built for a whole
    generation); the rows of this call's queries and the columns of the keys so far are used.
    """
    key_length = past_length + query_length
    if mask is not None:
        rows = (mask.context if isinstance(mask, AttentionMask) else mask).shape[0]
        if rows not in (1, batch_size):
            raise ValueError(f"attention mask has {rows} rows for a batch of {batch_size}")
    if mask is None:
        mask = AttentionMask.from_context_lengths(0, key_length, batch_size, device)
    if isinstance(mask, AttentionMask):
        if mask.context.shape[1] < key_length:
            raise ValueError(f"attention mask covers {mask.context.shape[1]} tokens, the input "
                             f"and cache {key_length}")
        if mask.context.shape[1] > key_length:
            seg = mask.segment_ids
            mask = AttentionMask(mask.context[:, :key_length],
                                 None if seg is None else seg[:, :key_length])
        return mask.dense(past_length, query_length)
    if mask.dtype != torch.bool:
        raise TypeError("a dense attention mask must be bool [b, 1, q, k] with True = blocked, "
                        f"got {mask.dtype}")
    if mask.dim() != 4 or mask.shape[-1] < key_length or (
            mask.shape[-2] != query_length and mask.shape[-2] < key_length):
        raise ValueError(f"dense attention mask of shape {tuple(mask.shape)} does not cover "
                         f"[b, 1, {query_length}, {key_length}]")
    if mask.shape[-2] != query_length:  # a whole-sequence mask: take this call's rows
        mask = mask[..., past_length:key_length, :]
    return mask[..., :key_length]


def position_ids(seq_len: int, sop_index: Optional[int] = None,
                 mask_position: Optional[int] = None) -> torch.Tensor:
    """Positions of one sample (reference §2.1, §2.2, §2.6). [gMASK]: positions count on through
    the generated part. [MASK]/[sMASK]: `sop` and every token after it take the position of the
    mask being filled."""
    pos = torch.arange(seq_len)
    if mask_position is not None:
        if sop_index is None:
            raise ValueError("a [MASK]/[sMASK] sample needs the index of its sop token")
        pos[sop_index:] = mask_position
    return pos


def multiple_choice_mask(division: int, choice_lengths: Sequence[int]) -> torch.Tensor:
    """[1, 1, T, T] bool (True = blocked) for one shared context of `division` tokens followed
    by choices that each see the whole context and themselves causally, never another choice
    (reference §2.3)."""
    total = division + sum(choice_lengths)
    visible = torch.zeros(total, total, dtype=torch.bool)
    visible[:, :division] = True
    start = division
    for n in choice_lengths:
        visible[start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
        start += n
    return ~visible.view(1, 1, total, total)
