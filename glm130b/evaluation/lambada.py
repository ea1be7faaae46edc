"""LAMBADA: predict the last word of a passage (reference §7.4).

Deterministic beam search that may not start with punctuation (banned as first tokens, and
as multi-token prefixes), then the first whitespace-separated word of the first beam that is
followed by a punctuation mark (else of the best beam); right only when that whole word
equals the target.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import List

from ..generation import BeamSearchStrategy
from ..generation.strategies import FILTER_VALUE
from ..tokenization import IceTokenizer
from .configs import GenerationTaskConfig
from .metrics import best_over_answers
from .tasks import GenerationTask

# icetk ids the reference bans besides punctuation (its comments: "'" and "``").
ICETK_INVALID = [20068, 146010, 146337]
ICETK_BANNED_PREFIXES = [[46010], [146337]]


def whole_word_match(prediction: str, truth: str) -> float:
    return float(prediction.strip() == truth.strip())


def lambada_accuracy(task, predictions, data) -> float:
    decode = task.tokenizer.decode
    return best_over_answers(whole_word_match, [decode(p) for p in predictions],
                             [[decode(t) for t in e.targets] for e in data.examples])


class LambadaBeamSearch(BeamSearchStrategy):
    """Beam search that bans `banned_prefixes` at the start of the generation: a one-token
    prefix is never the first token, a longer one never completes after its first tokens."""

    def __init__(self, *args, banned_prefixes=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.banned_prefixes = [list(p) for p in banned_prefixes if p]

    def forward(self, logits, tokens, last=None):
        logits = logits.float()
        for prefix in self.banned_prefixes:
            if self.generated != len(prefix) - 1:
                continue
            head = prefix[:-1]
            for row in range(logits.shape[0]):
                if not head or tokens[row, -len(head):].tolist() == head:
                    logits[row, prefix[-1]] = FILTER_VALUE
        return super().forward(logits, tokens, last)


def punctuation_bans(tokenizer) -> tuple[list[int], list[list[int]]]:
    """(ids never generated, prefixes banned at the start): every ASCII punctuation mark as
    this tokenizer writes it, plus, for icetk, the reference's extra ids; other tokenizers get
    the "``" quote derived the same way."""
    if isinstance(tokenizer, IceTokenizer):
        invalid, banned, marks = list(ICETK_INVALID), [list(p) for p in ICETK_BANNED_PREFIXES], \
            list(string.punctuation)
    else:
        invalid, banned, marks = [], [], list(string.punctuation) + ["``"]
    for mark in marks:
        ids = tokenizer.tokenize(mark)
        if len(ids) == 1:
            invalid.append(ids[0])
        banned.append(ids)
    return invalid, banned


@dataclass
class LAMBADAConfig(GenerationTaskConfig):
    metrics: List[str] = field(default_factory=lambda: ["Accuracy"])


class LAMBADA(GenerationTask):
    config_class = LAMBADAConfig
    METRICS = {"Accuracy": lambada_accuracy}

    def build_strategy(self, invalid_slices: list):
        c = self.config
        if c.sampling_strategy != "BeamSearchStrategy":
            return super().build_strategy(invalid_slices)
        invalid, banned = punctuation_bans(self.tokenizer)
        return LambadaBeamSearch(c.num_beams, length_penalty=c.length_penalty, consider_end=True,
                                 end_tokens=self.end_tokens,
                                 invalid_slices=invalid_slices + invalid,
                                 no_repeat_ngram_size=c.no_repeat_ngram_size,
                                 min_gen_length=c.min_gen_length, deterministic=True,
                                 banned_prefixes=banned)

    def first_word(self, ids: list[int]) -> list[int]:
        return self.tokenizer.tokenize(self.tokenizer.decode(ids).strip().split(" ")[0])

    def choose(self, beams: list[list[int]]) -> list[int]:
        for ids in beams:
            words = self.tokenizer.decode(ids).strip().split(" ")
            if len(words) >= 2 and words[1] in string.punctuation:
                return self.first_word(ids)
        return self.first_word(beams[0])
