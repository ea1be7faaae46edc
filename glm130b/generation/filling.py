"""Blank filling with [MASK], [sMASK] and [gMASK] (reference §2.1, §2.4, §6.3, §6.6).

A prompt is tokenized piece by piece around its masks; one mask type is filled, left to right,
each fill seen by the next. Many prompts decode together: each round gives every prompt that
still has a blank one row, left-padded to a common width so that all rows generate in the
same column, with the key/value cache. Each row keeps its own context length and positions,
and the padding is invisible to it (a segment of its own in the mask), so a row decodes as it
would alone.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ..cli import UsageError
from ..model import AttentionMask, KVCache

MASK_PATTERN = re.compile(r"\[[sg]?MASK\]")
# How the reference underlines a blank on a terminal: [MASK]/[sMASK] green, [gMASK] plain.
STYLE = {False: ("\x1b[0;32m\033[4m", "\033[0m\x1b[0m"), True: ("\033[4m", "\033[0m")}


class PromptError(UsageError):
    """A prompt that cannot be generated from (too long, malformed); the CLI exits 2."""


@dataclass
class Prompt:
    text: str          # as displayed: " [gMASK]" appended when the text had no mask
    tokens: list[int]
    mask_id: int       # the mask type being filled
    use_gmask: bool    # positions count on through the fill instead of repeating the mask's


def end_tokens(tokenizer) -> list[int]:
    """A blank ends at [eop] or at the end of the text (reference §6.4)."""
    return [tokenizer.get_command("eop"), tokenizer.get_command("eos")]


def padding_slices(tokenizer, vocab_size: int) -> list[slice]:
    """Rows of the output layer past the tokenizer's ids only pad the vocabulary: never
    generate them (reference pitfall 13)."""
    return [slice(tokenizer.num_tokens, None)] if vocab_size > tokenizer.num_tokens else []


def build_prompt(text: str, tokenizer, max_sequence_length: int,
                 out_seq_length: Optional[int] = None) -> Prompt:
    """The reference's rules: fill [MASK] if present, else [sMASK], else [gMASK] (appended when
    the text has no mask); eos after the text unless it ends in a mask."""
    kind = "[MASK]" if "[MASK]" in text else "[sMASK]" if "[sMASK]" in text else "[gMASK]"
    pieces, masks = MASK_PATTERN.split(text), MASK_PATTERN.findall(text)
    tokens = []
    for piece, mask in zip(pieces, masks):
        tokens += tokenizer.tokenize(piece) + [tokenizer.get_command(mask)]
    tokens += tokenizer.tokenize(pieces[-1])
    if not masks:
        tokens.append(tokenizer.get_command(kind))
        text += " " + kind
    if not text.endswith("MASK]"):
        tokens.append(tokenizer.get_command("eos"))
    if len(tokens) > max_sequence_length:
        raise PromptError(f"text too long: {len(tokens)} tokens, more than "
                          f"--max-sequence-length {max_sequence_length}")
    if out_seq_length is not None and len(tokens) + 1 >= out_seq_length:
        raise PromptError(f"no room to generate: the prompt is {len(tokens)} tokens and "
                          f"--out-seq-length {out_seq_length} counts the prompt too; raise it")
    return Prompt(text, tokens, tokenizer.get_command(kind), kind == "[gMASK]")


def _device(model) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def batch_filling_sequence(model, contexts: Sequence[Sequence[int]],
                           mask_positions: Sequence[Optional[int]], strategy,
                           out_seq_length: int, use_cache: bool = True,
                           on_step: Optional[Callable[[torch.Tensor, int], None]] = None):
    """Generate after each context (which ends in `sop`) until the strategy stops or the row
    holds `out_seq_length` tokens. A row with a mask position repeats it as the position of
    `sop` and everything after; without one, positions count on ([gMASK]).

    Returns the strategy's `finalize`: per row, its sequences, context included.
    `on_step(tokens, width)` sees the tokens after each step; generation starts at `width`.
    """
    device = _device(model)
    lengths = torch.tensor([len(c) for c in contexts])
    if int(lengths.max()) >= out_seq_length:
        raise ValueError(f"a context of {int(lengths.max())} tokens leaves no room in "
                         f"out_seq_length {out_seq_length}")
    width = int(lengths.max())
    total = width + out_seq_length - int(lengths.min())
    pads = width - lengths
    tokens = torch.full((len(contexts), width), -1, dtype=torch.long)
    for row, ids in enumerate(contexts):
        tokens[row, int(pads[row]):] = torch.tensor(list(ids), dtype=torch.long)
    index = torch.arange(total) - pads.unsqueeze(1)  # each row's own token index
    positions = index.clamp(min=0)
    for row, mask_position in enumerate(mask_positions):
        if mask_position is not None:
            positions[row, width - 1:] = mask_position
    # Context without its `sop` is bidirectional (reference §2.1); the padding is a segment
    # of its own, so no real token sees it.
    context = (index >= 0) & (index < lengths.unsqueeze(1) - 1)
    segments = (index >= 0).long()
    tokens, positions, context, segments = (t.to(device) for t in (tokens, positions, context,
                                                                   segments))

    strategy.start(len(contexts), device)
    cache = KVCache() if use_cache else None
    past = 0
    for step in range(total - width):
        seen = tokens.shape[1]
        logits = model(tokens[:, past:].clamp(min=0), positions[:, past:seen],
                       AttentionMask(context, segments), kv_cache=cache)[:, -1]
        last = (lengths + step + 1 >= out_seq_length).to(device)
        tokens, parents = strategy.forward(logits, tokens, last)
        if parents is not None:  # beams picked and repeated rows: everything follows them
            positions, context, segments = positions[parents], context[parents], segments[parents]
            if cache is not None:
                cache.reorder(parents)
        if cache is not None:
            past = seen
        if on_step is not None:
            on_step(tokens, width)
        if strategy.is_done:
            break
    return strategy.finalize(tokens)


@dataclass
class Filled:
    answers: list[str]         # per beam: the whole text, blanks filled, trailing eos dropped
    styled: list[str]          # per beam: the same for a terminal, blanks underlined
    blanks: list[list[str]]    # per beam: the text of each blank, left to right


@dataclass
class _Filling:
    """One prompt's progress through its blanks, as the reference keeps it (§2.4, §6.6)."""
    prompt: Prompt
    num_outputs: int
    outputs: list[list[int]] = field(default_factory=list)
    last_pos: list[int] = field(default_factory=list)
    styled: list[str] = field(default_factory=list)
    blanks: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        self.outputs = [list(self.prompt.tokens)]
        self.last_pos = [0] * self.num_outputs
        self.styled = [""] * self.num_outputs
        self.blanks = [[] for _ in range(self.num_outputs)]

    @property
    def seq(self) -> list[int]:
        # Only the best beam's sequence goes on to the next blank.
        return self.outputs[0]

    def has_blank(self) -> bool:
        return self.prompt.mask_id in self.seq

    def mask_position(self) -> int:
        return self.seq.index(self.prompt.mask_id)

    def take(self, results: list[list[int]], tokenizer, end_tokens) -> None:
        """Put each result's blank in place of the mask; record it for display."""
        mask_position, bog = self.mask_position(), len(self.seq)  # bog: where `sop` sits
        english = self.prompt.text.isascii()
        space = " " if english else ""
        open_, close = STYLE[self.prompt.use_gmask]
        self.outputs = []
        for i, output in enumerate(results):
            end = len(output) - (1 if len(output) > bog + 1 and output[-1] in end_tokens else 0)
            prefix = tokenizer.detokenize(output[self.last_pos[i]:mask_position])
            blank = tokenizer.detokenize(output[bog + 1:end])
            self.styled[i] += prefix + space + open_ + blank + close + space
            self.blanks[i].append(blank)
            self.last_pos[i] = mask_position + end - (bog + 1)
            self.outputs.append(output[:mask_position] + output[bog + 1:end]
                                + output[mask_position + 1:bog])

    def result(self, tokenizer) -> Filled:
        eos = tokenizer.get_command("eos")
        answers, styled = [], []
        for i, output in enumerate(self.outputs):
            if output and output[-1] == eos:
                output = output[:-1]
            styled.append(self.styled[i] + tokenizer.detokenize(output[self.last_pos[i]:]))
            answers.append(tokenizer.detokenize(output))
        return Filled(answers, styled, self.blanks[:len(answers)])


def fill_blanks(model, tokenizer, prompts: Sequence[Prompt], strategy, out_seq_length: int,
                use_cache: bool = True,
                on_token: Optional[Callable[[int, int, list[int]], None]] = None) -> list[Filled]:
    """Fill every blank of every prompt; prompts of any lengths decode as one batch per blank.

    on_token(prompt index, blank index, ids of the blank so far) is called after each step
    when the strategy keeps one sequence per prompt (for streaming output).
    """
    sop = tokenizer.get_command("sop")
    states = [_Filling(p, strategy.num_beams) for p in prompts]
    while True:
        active = [i for i, s in enumerate(states) if s.has_blank()]
        if not active:
            break
        # A blank with no length budget left stays empty.
        for i in [i for i in active if len(states[i].seq) + 1 >= out_seq_length]:
            states[i].take([states[i].seq + [sop]], tokenizer, strategy.end_tokens)
        active = [i for i in active if len(states[i].seq) + 1 < out_seq_length]
        if not active:
            continue
        contexts = [states[i].seq + [sop] for i in active]
        positions = [None if states[i].prompt.use_gmask else states[i].mask_position()
                     for i in active]
        on_step = None
        if on_token is not None and strategy.num_beams == 1:
            def on_step(tokens, width, active=active):
                for row, i in enumerate(active):
                    on_token(i, len(states[i].blanks[0]),
                             [t for t in tokens[row, width:].tolist() if t >= 0])
        results = batch_filling_sequence(model, contexts, positions, strategy, out_seq_length,
                                         use_cache, on_step)
        for i, result in zip(active, results):
            states[i].take(result, tokenizer, strategy.end_tokens)
    return [s.result(tokenizer) for s in states]
