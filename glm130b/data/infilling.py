"""GLM's blank-infilling samples as GLM-130B's pretraining builds them (reference §2.6, §8.3,
§8.4).

A sample is Part A, the text with blanks, which attends to itself in both directions, followed
by Part B, what goes into the blanks, predicted left to right (Part B sees Part A and its own
earlier tokens; Part A never sees Part B). Targets sit under the inputs already shifted, loss
only on Part B. Several samples may be packed into one sequence, each a segment that attends
only to itself; a `Sample` carries (length, context length) per segment, from which
`AttentionMask.packed` / `from_context_lengths` build the mask.

- [gMASK]: source + [gMASK, sop] + target[:-1] -> source + [gMASK] + target; the generation
  length is uniform in [min_gmask_ratio·n, n]; positions count on (arange).
- [MASK]: the sample is cut into `aggregated_samples_per_sequence` chunks, each corrupted on
  its own and cut to its slot (seq_length / chunks), as the reference's collator does; spans of
  Poisson(λ) length (1..39) until mask_prob of the chunk is covered; Part A positions are
  indices in the corrupted text, every Part B token takes its [MASK]'s position.
- [sMASK]: the same with whole sentences, GLM's sentence-level objective (unused by GLM-130B).
- Instruction (MIP): "input [MASK] [sop] target" -> "input [MASK] target [eop]", packed per slot,
  over-long ones truncated as the reference does; positions arange, as in its final code.

Every random choice comes from the `numpy.random.Generator` passed in, so a sample is a pure
function of its tokens and that generator's seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

MAX_SPAN = 39          # span lengths are drawn from Poisson(λ) restricted to 1..39
SHORT_SEQ_MIN = 32     # a shortened chunk keeps at least this many tokens
# A token whose text contains one of these ends a sentence for [sMASK] (GLM's rule).
SENTENCE_END = (".", "?", "!", ";", ":", "。", "？", "！", "；", "…", "\n")


@dataclass(frozen=True)
class InfillingConfig:
    """The reference's arguments (LargeScale names), GLM-130B's values by default."""
    seq_length: int = 2048
    length_per_sample: int = 2000
    aggregated_samples_per_sequence: int = 4
    mask_prob: float = 0.15
    average_block_length: float = 3.0
    single_span_prob: float = 0.02
    short_seq_prob: float = 0.02
    min_gmask_ratio: float = 0.2

    def __post_init__(self):
        chunks = self.aggregated_samples_per_sequence
        if chunks < 1 or self.seq_length % chunks:
            raise ValueError(f"seq_length {self.seq_length} must split into "
                             f"aggregated_samples_per_sequence={chunks} equal slots")
        if self.length_per_sample + 1 > self.seq_length:
            raise ValueError(f"a [gMASK] sample of length_per_sample {self.length_per_sample} "
                             f"needs {self.length_per_sample + 1} > seq_length {self.seq_length}")
        if not 0 <= self.min_gmask_ratio <= 1 or not 0 < self.mask_prob < 1:
            raise ValueError("min_gmask_ratio must be in [0, 1] and mask_prob in (0, 1)")

    @property
    def slot_length(self) -> int:
        return self.seq_length // self.aggregated_samples_per_sequence


@dataclass
class Sample:
    tokens: np.ndarray        # int64 [n]
    targets: np.ndarray       # int64 [n], the token to predict at each place
    loss_mask: np.ndarray     # int64 [n], 1 on Part B
    position_ids: np.ndarray  # int64 [n]
    segments: list            # [(length, context length)] of the packed pieces, in order
    objective: str            # "gmask", "mask", "smask" or "mip"

    def __len__(self) -> int:
        return len(self.tokens)

    def truncated(self, length: int) -> "Sample":
        (n, context), = self.segments
        n = min(n, length)
        return Sample(self.tokens[:n], self.targets[:n], self.loss_mask[:n],
                      self.position_ids[:n], [(n, min(context, n))], self.objective)


def pack(pieces: list[Sample], objective: str) -> Sample:
    cat = lambda name: np.concatenate([getattr(p, name) for p in pieces])
    return Sample(cat("tokens"), cat("targets"), cat("loss_mask"), cat("position_ids"),
                  [s for p in pieces for s in p.segments], objective)


def _ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def blank_infill(x: np.ndarray, spans, order, mask_id: int, sop_id: int, eop_id: int,
                 objective: str = "mask") -> Sample:
    """x with each (start, end) span of `spans` (sorted, disjoint) replaced by one `mask_id`
    (Part A), then the spans in `order` as [sop]+span -> span+[eop] (Part B)."""
    x = _ids(x)
    part_a, mask_at, length, last = [], [], 0, 0
    for start, end in spans:
        part_a += [x[last:start], _ids([mask_id])]
        length += start - last + 1
        mask_at.append(length - 1)
        last = end
    part_a = np.concatenate(part_a + [x[last:]])
    tokens, targets, positions = [part_a], [part_a], [np.arange(len(part_a))]
    for i in order:
        start, end = spans[i]
        tokens.append(np.concatenate([_ids([sop_id]), x[start:end]]))
        targets.append(np.concatenate([x[start:end], _ids([eop_id])]))
        positions.append(np.full(end - start + 1, mask_at[i]))
    tokens, targets = np.concatenate(tokens), np.concatenate(targets)
    loss = (np.arange(len(tokens)) >= len(part_a)).astype(np.int64)
    return Sample(tokens, targets, loss, np.concatenate(positions).astype(np.int64),
                  [(len(tokens), len(part_a))], objective)


def span_length_cdf(mean: float) -> np.ndarray:
    """Cumulative Poisson(mean) probabilities of lengths 1..MAX_SPAN, renormalised."""
    pmf = np.array([math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))
                    for k in range(1, MAX_SPAN + 1)])
    return np.cumsum(pmf / pmf.sum())


def place_spans(lengths, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Spans of the given lengths at uniformly random places in n tokens, in random order of
    lengths, never overlapping and at least one token apart (the reference's sample_spans).
    Spans that cannot fit are dropped from the end."""
    lengths = list(lengths)
    rng.shuffle(lengths)
    while lengths and n - sum(lengths) - len(lengths) + 1 < 0:
        lengths.pop()
    if not lengths:
        return []
    room = n - sum(lengths) - len(lengths) + 1
    places = np.sort(rng.integers(0, room + 1, size=len(lengths)))
    starts = places + np.cumsum([0] + lengths[:-1]) + np.arange(len(lengths))
    return [(int(s), int(s) + k) for s, k in zip(starts, lengths)]


class Infilling:
    """The objectives for one tokenizer's special ids."""

    def __init__(self, tokenizer, config: InfillingConfig = InfillingConfig()):
        self.tokenizer, self.config = tokenizer, config
        cmd = tokenizer.get_command
        self.mask_id, self.gmask_id, self.smask_id = cmd("[MASK]"), cmd("[gMASK]"), cmd("[sMASK]")
        self.sop_id, self.eop_id = cmd("sop"), cmd("eop")
        self._span_cdf = span_length_cdf(config.average_block_length)

    # ---- [gMASK] ----------------------------------------------------------------------------
    def gmask(self, x: np.ndarray, rng: np.random.Generator) -> Sample:
        x, n = _ids(x), len(x)
        low = max(1, int(self.config.min_gmask_ratio * n))
        generate = int(rng.integers(low, n, endpoint=True))
        source, target = x[:n - generate], x[n - generate:]
        tokens = np.concatenate([source, _ids([self.gmask_id, self.sop_id]), target[:-1]])
        targets = np.concatenate([source, _ids([self.gmask_id]), target])
        loss = (np.arange(n + 1) > len(source)).astype(np.int64)
        # The [gMASK] is context; sop and the target are generated left to right.
        return Sample(tokens, targets, loss, np.arange(n + 1), [(n + 1, len(source) + 1)], "gmask")

    # ---- [MASK] and [sMASK] -----------------------------------------------------------------
    def mask(self, x: np.ndarray, rng: np.random.Generator) -> Sample:
        return self._chunked(x, rng, self.mask_spans, self.mask_id, "mask")

    def smask(self, x: np.ndarray, rng: np.random.Generator) -> Sample:
        return self._chunked(x, rng, self.sentence_spans, self.smask_id, "smask")

    def _chunked(self, x, rng, choose_spans, mask_id: int, objective: str) -> Sample:
        pieces = []
        for chunk in np.array_split(_ids(x), self.config.aggregated_samples_per_sequence):
            if len(chunk) > SHORT_SEQ_MIN and rng.random() < self.config.short_seq_prob:
                chunk = chunk[:rng.integers(SHORT_SEQ_MIN, len(chunk))]
            spans = choose_spans(chunk, rng)
            piece = blank_infill(chunk, spans, rng.permutation(len(spans)), mask_id,
                                 self.sop_id, self.eop_id, objective)
            # Part B can outgrow the slot (500 tokens + 2 per span); the reference cuts it off.
            pieces.append(piece.truncated(self.config.slot_length))
        return pack(pieces, objective)

    def span_lengths(self, n: int, rng: np.random.Generator) -> list[int]:
        """Poisson lengths until they cover mask_prob of n tokens; one span with
        single_span_prob."""
        draw = lambda k: (np.searchsorted(self._span_cdf, rng.random(k), side="right") + 1)
        if rng.random() < self.config.single_span_prob:
            return [int(draw(1)[0])]
        goal = max(1, int(self.config.mask_prob * n))
        lengths, total = [], 0
        while total < goal:
            batch = draw((goal - total) // 2 + 1)
            covered = total + np.cumsum(batch)
            stop = int(np.searchsorted(covered, goal))  # first prefix reaching the goal
            lengths.extend(batch[:stop + 1].tolist())
            total = int(covered[min(stop, len(batch) - 1)])
        return lengths

    def mask_spans(self, chunk: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
        return place_spans(self.span_lengths(len(chunk), rng), len(chunk), rng)

    def sentence_spans(self, chunk: np.ndarray, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Whole sentences (each ends with its sentence-end token) in random order until they
        cover mask_prob of the chunk; adjacent ones may both be chosen."""
        cuts = np.flatnonzero(self.sentence_end[chunk]) + 1
        bounds = np.unique(np.concatenate([[0], cuts, [len(chunk)]]))
        sentences = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        goal = max(1, int(self.config.mask_prob * len(chunk)))
        chosen, total = [], 0
        for i in rng.permutation(len(sentences)):
            if total >= goal:
                break
            chosen.append(sentences[i])
            total += sentences[i][1] - sentences[i][0]
        return sorted(chosen)

    @cached_property
    def sentence_end(self) -> np.ndarray:
        """Per token id: does it end a sentence. Built once from every piece's text."""
        tok = self.tokenizer
        table = np.zeros(tok.num_tokens, dtype=bool)
        for i in range(tok.num_text_tokens):
            try:
                text = tok.decode([i])
            except ValueError:  # ids that are not text (icetk's image range)
                continue
            table[i] = any(c in text for c in SENTENCE_END)
        table[[*tok.sentence_end_ids, tok.get_command("eod"), tok.get_command("eos")]] = True
        return table

    # ---- instruction data (MIP) -------------------------------------------------------------
    def instruction(self, pairs) -> Sample:
        """(input ids, target ids) pairs, one per slot, packed into one sequence."""
        return pack([self._instruction_piece(_ids(a), _ids(b)) for a, b in pairs], "mip")

    def _instruction_piece(self, text: np.ndarray, target: np.ndarray) -> Sample:
        slot = self.config.slot_length
        # The reference keeps the beginning of the input (at least a quarter of the slot, or
        # whatever leaves room for the target), then cuts the target if still too long.
        if len(text) + len(target) + 2 > slot:
            text = text[:max(int(0.25 * slot), slot - len(target) - 2)]
        if len(text) + len(target) + 2 > slot:
            target = target[:slot - len(text) - 2]
        tokens = np.concatenate([text, _ids([self.mask_id, self.sop_id]), target])
        targets = np.concatenate([text, _ids([self.mask_id]), target, _ids([self.eop_id])])
        loss = (np.arange(len(tokens)) > len(text)).astype(np.int64)
        return Sample(tokens, targets, loss, np.arange(len(tokens)),
                      [(len(tokens), len(text) + 1)], "mip")
