"""Rows of different prompts decoding together with one key/value cache.

Rows are aligned on the right: every row's next token goes in the same column, and a row
shorter than the batch is padded on the left. Padding is a segment of its own, so no real
token ever sees it and each row decodes as it would alone. Rows may join (a new prompt's
context is run and its cache appended, the shorter side padded) and leave (`select`) between
steps, which is what both a fixed batch (`batch_filling_sequence`) and the server's
continuous batching need.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..model import AttentionMask, KVCache


def model_device(model) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def pad_left(contexts: Sequence[Sequence[int]], mask_positions: Sequence[Optional[int]],
             total: int):
    """Contexts (each ending in `sop`) right-aligned in `width` = the longest one's columns.

    Returns tokens [b, width] (-1 on the padding) and, over `total` >= width columns (the
    generated ones after the context), positions, the bidirectional-context flags and the
    segment ids (0 on the padding). A row with a mask position repeats it as the position of
    `sop` and of everything generated ([MASK]/[sMASK]); without one, positions count on.
    """
    lengths = torch.tensor([len(c) for c in contexts])
    width = int(lengths.max())
    pads = width - lengths
    tokens = torch.full((len(contexts), width), -1, dtype=torch.long)
    for row, ids in enumerate(contexts):
        tokens[row, int(pads[row]):] = torch.tensor(list(ids), dtype=torch.long)
    index = torch.arange(total) - pads.unsqueeze(1)  # each row's own token index
    positions = index.clamp(min=0)
    for row, mask_position in enumerate(mask_positions):
        if mask_position is not None:
            positions[row, width - 1:] = mask_position
    # The context without its `sop` is bidirectional (reference §2.1).
    context = (index >= 0) & (index < lengths.unsqueeze(1) - 1)
    segments = (index >= 0).long()
    return tokens, positions, context, segments


class DecodeBatch:
    """The key/value cache of the rows decoding now, and each row's left padding."""

    def __init__(self, model):
        self.model = model
        self.device = model_device(model)
        self.cache = KVCache()
        self.pads = torch.zeros(0, dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return self.pads.shape[0]

    @property
    def width(self) -> int:
        return len(self.cache)

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, positions: torch.Tensor, context: torch.Tensor,
                segments: torch.Tensor) -> torch.Tensor:
        """Run new rows' contexts (as `pad_left` lays them out, `width` columns) and append
        them; returns their logits for the first generated token, [new rows, vocab]."""
        tokens, positions, context, segments = (t.to(self.device) for t in
                                                (tokens, positions, context, segments))
        cache = KVCache()
        logits = self.model(tokens.clamp(min=0), positions, AttentionMask(context, segments),
                            kv_cache=cache)[:, -1]
        self._append(cache, (segments == 0).sum(dim=1))
        return logits

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One token per row (-1 for a row that has ended: it feeds a harmless id) at its
        position; returns the logits of the next, [rows, vocab]."""
        tokens, positions = tokens.to(self.device), positions.to(self.device)
        keys = torch.arange(self.width + 1, device=self.device)
        # A generated token sees its whole row, everything but the padding segment.
        segments = (keys.unsqueeze(0) >= self.pads.unsqueeze(1)).long()
        mask = AttentionMask(torch.zeros_like(segments, dtype=torch.bool), segments)
        return self.model(tokens.clamp(min=0).unsqueeze(1), positions.unsqueeze(1), mask,
                          kv_cache=self.cache)[:, -1]

    def select(self, index: torch.Tensor) -> None:
        """Keep rows `index`, in that order (repeats allowed: beams); columns that became
        padding in every row are dropped."""
        index = index.to(self.device)
        if index.numel() == 0:
            self.cache, self.pads = KVCache(), self.pads[:0]
            return
        self.cache.reorder(index)
        self.pads = self.pads[index]
        unused = int(self.pads.min())
        if unused:
            self.cache.keys = [k[:, :, unused:] for k in self.cache.keys]
            self.cache.values = [v[:, :, unused:] for v in self.cache.values]
            self.pads = self.pads - unused

    def _append(self, cache: KVCache, pads: torch.Tensor) -> None:
        if len(self) == 0:
            self.cache, self.pads = cache, pads
            return
        grow = len(cache) - self.width
        mine, theirs = max(grow, 0), max(-grow, 0)
        self.cache.keys = [torch.cat((F.pad(a, (0, 0, mine, 0)), F.pad(b, (0, 0, theirs, 0))))
                           for a, b in zip(self.cache.keys, cache.keys)]
        self.cache.values = [torch.cat((F.pad(a, (0, 0, mine, 0)), F.pad(b, (0, 0, theirs, 0))))
                             for a, b in zip(self.cache.values, cache.values)]
        self.pads = torch.cat((self.pads + mine, pads + theirs))
