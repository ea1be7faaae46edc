"""Decoding strategies (reference §6.4, §6.5): the next token of every row, given its logits.

The decoding loop (`filling.batch_filling_sequence`) drives a strategy in three calls:
`start(batch_size, device)` before the first token, `forward(logits, tokens, last)` once per
generated token, `finalize(tokens)` at the end. `forward` returns the extended tokens and, for
beam search, which input row each output row continues (`parents`), so that the loop can
reorder the key/value cache, the positions and the mask to match.

Tokens are [rows, width] with -1 where a row has no token: left padding before a shorter
context, and the slots after a sampled row has ended. Randomness comes from a
`torch.Generator` seeded once, so one seed gives one output, on every tensor-parallel rank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# The reference fills forbidden logits with the most negative fp16 number, not -inf, so that
# a row with every entry forbidden still gives a finite softmax.
FILTER_VALUE = -65504.0


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0,
                       filter_value: float = FILTER_VALUE) -> torch.Tensor:
    """Keep, in each row on its own, the top_k largest logits (0: all) and then the smallest
    set of the largest whose probability reaches top_p (0: all); the rest get filter_value."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, filter_value)
    if top_p > 0.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Shifted by one: the token that crosses top_p stays, and the most likely always does.
        remove = torch.zeros_like(cumulative, dtype=torch.bool)
        remove[..., 1:] = cumulative[..., :-1] > top_p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), filter_value)
    return logits


class _Seeded:
    """A generator on the logits' device, made on first use from the seed (None: torch's
    global generator)."""

    def __init__(self, seed: Optional[int]):
        self.seed, self._generator = seed, None

    def generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device).manual_seed(self.seed)
        return self._generator


def _forbid(logits: torch.Tensor, invalid_slices) -> torch.Tensor:
    for invalid in invalid_slices:
        logits[..., invalid] = FILTER_VALUE
    return logits


class BaseStrategy:
    """Sampling with temperature, top-k and top-p (nucleus) for any number of rows; top_k=1
    is greedy decoding. A row ends at one of `end_tokens` (kept) and gets -1 afterwards."""

    num_beams = 1

    def __init__(self, invalid_slices: Sequence = (), temperature: float = 1.0, top_k: int = 200,
                 top_p: float = 0.0, end_tokens: Sequence[int] = (), seed: Optional[int] = None):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}; use top_k=1 "
                             "for greedy decoding")
        self.invalid_slices, self.temperature = list(invalid_slices), temperature
        self.top_k, self.top_p, self.end_tokens = top_k, top_p, list(end_tokens)
        self.random = _Seeded(seed)
        self._done = torch.zeros(0, dtype=torch.bool)

    def start(self, batch_size: int, device: torch.device) -> None:
        self._done = torch.zeros(batch_size, dtype=torch.bool, device=device)

    @property
    def is_done(self) -> bool:
        return bool(self._done.all())

    @property
    def settings(self) -> tuple:
        """What `probabilities` depends on: strategies with equal settings can share a call."""
        return self.temperature, self.top_k, self.top_p, repr(self.invalid_slices)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """[rows, vocab]: what each row samples from, after temperature, the forbidden ids,
        top-k and top-p; every row on its own."""
        logits = _forbid(logits.float() / self.temperature, self.invalid_slices)
        return top_k_top_p_filter(logits, self.top_k, self.top_p).softmax(dim=-1)

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor,
                last: Optional[torch.Tensor] = None, probs: Optional[torch.Tensor] = None):
        """logits [rows, vocab], tokens [rows, s] -> (tokens [rows, s+1], None). `last` marks
        rows whose length budget ends with this token; `probs`, when given, are this
        strategy's `probabilities(logits)` computed already (with other rows)."""
        probs = self.probabilities(logits) if probs is None else probs
        pred = torch.multinomial(probs, 1, generator=self.random.generator(probs.device)).squeeze(1)
        pred = pred.masked_fill(self._done, -1)
        self._done |= torch.isin(pred, torch.tensor(self.end_tokens, dtype=torch.long,
                                                     device=pred.device))
        if last is not None:
            self._done |= last
        return torch.cat((tokens, pred.unsqueeze(1)), dim=1), None

    def finalize(self, tokens: torch.Tensor) -> list[list[list[int]]]:
        """Per row, one sequence: its context and generated tokens, end token included."""
        return [[[t for t in row.tolist() if t >= 0]] for row in tokens]


class BeamSearchStrategy:
    """Beam search as the reference does it: candidates drawn from the flattened cumulative
    scores (top-k if deterministic, else sampled without replacement), beams ending in an end
    token kept with score / ((5 + length) / 6) ** length_penalty where length counts the
    context too, no-repeat n-grams, no end before min_gen_length tokens."""

    def __init__(self, num_beams: int, length_penalty: float = 1.0, consider_end: bool = False,
                 end_tokens: Sequence[int] = (), invalid_slices: Sequence = (),
                 no_repeat_ngram_size: int = 0, min_gen_length: int = 0,
                 deterministic: bool = False, seed: Optional[int] = None):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.consider_end = consider_end
        self.end_tokens, self.invalid_slices = list(end_tokens), list(invalid_slices)
        self.ngram, self.min_gen_length = no_repeat_ngram_size, min_gen_length
        self.deterministic = deterministic
        self.random = _Seeded(seed)
        self.start(0, torch.device("cpu"))

    def start(self, batch_size: int, device: torch.device) -> None:
        self.batch_size = batch_size
        self.end_beams = [[] for _ in range(batch_size)]    # per row: sequences, best first
        self.end_scores = [[] for _ in range(batch_size)]   # their penalised scores
        self.scores = torch.zeros(batch_size, 1, device=device)  # cumulative, per live beam
        self.bans = [[{}] for _ in range(batch_size)]  # per live beam: n-gram prefix -> tokens
        self.generated = 0
        self.done = [False] * batch_size
        self.results: list[Optional[list[list[int]]]] = [None] * batch_size

    @property
    def is_done(self) -> bool:
        return all(self.done)

    def penalized(self, score: float, length: int) -> float:
        return score / ((5.0 + length) / 6) ** self.length_penalty  # OpenNMT's magic numbers

    def _add_end_beam(self, row: int, score: float, beam: list[int]) -> None:
        score = self.penalized(score, len(beam))
        i = len(self.end_scores[row])
        while i > 0 and score >= self.end_scores[row][i - 1]:
            i -= 1
        self.end_beams[row].insert(i, beam)
        self.end_scores[row].insert(i, score)
        del self.end_beams[row][self.num_beams:], self.end_scores[row][self.num_beams:]

    def _ban_ngrams(self, logits: torch.Tensor, tokens: torch.Tensor, lengths: list[int]) -> None:
        for row in range(self.batch_size):
            if lengths[row] <= self.ngram:
                continue
            for beam, bans in enumerate(self.bans[row]):
                banned = bans.get(self._prefix(tokens[row, beam]), ())
                if banned:
                    logits[row, beam, list(banned)] = FILTER_VALUE

    def _prefix(self, beam: torch.Tensor) -> tuple:
        # The last n-1 tokens (none for n = 1, where the reference would take the whole row).
        n = self.ngram - 1
        return tuple(beam[beam.shape[0] - n:].tolist()) if n > 0 else ()

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor,
                last: Optional[torch.Tensor] = None):
        """logits [b * beams, vocab], tokens [b * beams, s] (beams = 1 on the first call) ->
        (tokens [b * num_beams, s+1], parents [b * num_beams]: the input row each continues)."""
        b, vocab = self.batch_size, logits.shape[-1]
        beams = logits.shape[0] // b
        logits = _forbid(logits.float().view(b, beams, vocab), self.invalid_slices)
        tokens = tokens.view(b, beams, -1)
        lengths = (tokens[:, 0] >= 0).sum(dim=1).tolist()  # context + generated, no padding
        if self.generated < self.min_gen_length:
            logits[..., self.end_tokens] = FILTER_VALUE
        if self.ngram > 0:
            self._ban_ngrams(logits, tokens, lengths)

        scores = (F.log_softmax(logits, dim=-1) + self.scores.view(b, beams, 1)).view(b, -1)
        k = min((max(1, len(self.end_tokens)) + 1) * self.num_beams, scores.shape[1])
        probs = scores.softmax(dim=-1)
        if self.deterministic:
            picked = torch.topk(probs, k, dim=1).indices
        else:
            picked = torch.multinomial(probs, k, generator=self.random.generator(probs.device))
        picked_scores, order = scores.gather(1, picked).sort(dim=1, descending=True)
        picked = picked.gather(1, order)

        parents, new_tokens, new_scores = [], [], []
        for row in range(b):
            kept, kept_bans = [], []
            for score, flat in zip(picked_scores[row].tolist(), picked[row].tolist()):
                parent, token = divmod(flat, vocab)
                if not self.done[row] and token in self.end_tokens:
                    beam = [t for t in tokens[row, parent].tolist() if t >= 0] + [token]
                    self._add_end_beam(row, score, beam)
                elif len(kept) < self.num_beams:
                    kept.append((parent, token, score))
                    if self.ngram > 0:
                        bans = dict(self.bans[row][parent])
                        prefix = self._prefix(tokens[row, parent])
                        bans[prefix] = bans.get(prefix, ()) + (token,)
                        kept_bans.append(bans)
                else:
                    break
            if len(kept) < self.num_beams:
                raise ValueError(f"beam search found {len(kept)} continuations for "
                                 f"{self.num_beams} beams: the vocabulary is too small")
            self.bans[row] = kept_bans or [{} for _ in kept]
            parents += [row * beams + p for p, _, _ in kept]
            new_tokens += [t for _, t, _ in kept]
            new_scores.append([s for _, _, s in kept])

        parents = torch.tensor(parents, device=logits.device)
        out = torch.cat((tokens.view(b * beams, -1)[parents],
                         torch.tensor(new_tokens, device=logits.device).unsqueeze(1)), dim=1)
        self.scores = torch.tensor(new_scores, device=logits.device)
        self.generated += 1
        for row in range(b):
            best_live = self.penalized(self.scores[row].max().item(), lengths[row] + 1)
            if len(self.end_beams[row]) == self.num_beams and self.end_scores[row][-1] >= best_live:
                self.done[row] = True  # no live beam can beat the worst finished one
        if last is not None:
            for row in last.nonzero().flatten().tolist():
                self._close(row, out.view(b, self.num_beams, -1)[row])
        return out, parents

    def _close(self, row: int, live: torch.Tensor) -> None:
        """The row's answer, once its length budget is spent or decoding has stopped: with
        consider_end its finished beams with the live ones added, else the live beams."""
        if self.results[row] is not None:
            return
        beams = [[t for t in beam.tolist() if t >= 0] for beam in live]
        if not self.consider_end:
            self.results[row] = beams
            return
        if not self.done[row]:
            for score, beam in zip(self.scores[row].tolist(), beams):
                self._add_end_beam(row, score, beam)
        self.done[row] = True
        self.results[row] = self.end_beams[row]

    def finalize(self, tokens: torch.Tensor) -> list[list[list[int]]]:
        """Per row, its sequences (context included), best first."""
        live = tokens.view(self.batch_size, -1, tokens.shape[-1])
        for row in range(self.batch_size):
            self._close(row, live[row])
        return list(self.results)


def end_tokens(tokenizer) -> list[int]:
    """A blank ends at [eop] or at the end of the text (reference §6.4), or at the end of a
    document: preprocessing ends every document with `eod`, so models trained here emit it
    where a [gMASK] or [sMASK] fill is done. The CLI, the server and evaluation all end blanks
    here. icetk has an `eod` too (150003), but the released GLM-130B does not emit it at the
    end of a blank, so its outputs are the reference's."""
    return [tokenizer.get_command(name) for name in ("eop", "eos", "eod")]


def padding_slices(tokenizer, vocab_size: int) -> list[slice]:
    """Rows of the output layer past the tokenizer's ids only pad the vocabulary: never
    generate them (reference pitfall 13)."""
    return [slice(tokenizer.num_tokens, None)] if vocab_size > tokenizer.num_tokens else []


@dataclass
class SamplingConfig:
    """How blanks are filled: the reference's generation options, under its flag names."""
    sampling_strategy: str = "BaseStrategy"   # or "BeamSearchStrategy"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0
    num_beams: int = 1
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    min_gen_length: int = 0
    seed: Optional[int] = None


def build_strategy(tokenizer, vocab_size: int, sampling: SamplingConfig):
    """The strategy `generate` decodes with: it ends a blank at `end_tokens` and never picks the
    vocabulary's padding rows."""
    ends, invalid = end_tokens(tokenizer), padding_slices(tokenizer, vocab_size)
    s = sampling
    if s.sampling_strategy == "BaseStrategy":
        return BaseStrategy(invalid_slices=invalid, temperature=s.temperature, top_k=s.top_k,
                            top_p=s.top_p, end_tokens=ends, seed=s.seed)
    if s.sampling_strategy != "BeamSearchStrategy":
        raise ValueError(f"unknown sampling strategy {s.sampling_strategy!r}")
    return BeamSearchStrategy(s.num_beams, length_penalty=s.length_penalty, consider_end=True,
                              end_tokens=ends, invalid_slices=invalid,
                              no_repeat_ngram_size=s.no_repeat_ngram_size,
                              min_gen_length=s.min_gen_length, seed=s.seed)
