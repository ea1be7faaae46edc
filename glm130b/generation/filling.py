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
from typing import Callable, Collection, Iterable, Optional, Sequence

import torch

from ..errors import PromptError
from ..model import AttentionMask
from .batch import DecodeBatch, pad_left

MASK_PATTERN = re.compile(r"\[[sg]?MASK\]")
# Scripts written without spaces between words: CJK punctuation, kana, ideographs, Hangul
# syllables, full-width forms. playground.html's CLOSE_SCRIPT is the same class.
CLOSE_SCRIPT = re.compile("[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
                          "\uff00-\uffef]")
# How the reference underlines a blank on a terminal: [MASK]/[sMASK] green, [gMASK] plain.
STYLE = {False: ("\x1b[0;32m\033[4m", "\033[0m\x1b[0m"), True: ("\033[4m", "\033[0m")}


@dataclass
class Prompt:
    text: str          # as displayed: " [gMASK]" appended when the text had no mask
    tokens: list[int]
    mask_id: int       # the mask type being filled
    use_gmask: bool    # positions count on through the fill instead of repeating the mask's


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
    `use_cache=False` recomputes the whole sequence at every step (the plain definition,
    which the cached path is tested against).
    """
    lengths = torch.tensor([len(c) for c in contexts])
    if int(lengths.max()) >= out_seq_length:
        raise ValueError(f"a context of {int(lengths.max())} tokens leaves no room in "
                         f"out_seq_length {out_seq_length}")
    width = int(lengths.max())
    total = width + out_seq_length - int(lengths.min())
    tokens, positions, context, segments = pad_left(contexts, mask_positions, total)
    batch = DecodeBatch(model)
    strategy.start(len(contexts), batch.device)
    tokens = tokens.to(batch.device)
    for step in range(total - width):
        seen = tokens.shape[1]
        if not use_cache:
            mask = AttentionMask(context[:, :seen].to(batch.device),
                                 segments[:, :seen].to(batch.device))
            logits = model(tokens.clamp(min=0), positions[:, :seen].to(batch.device), mask)[:, -1]
        elif step == 0:
            logits = batch.prefill(tokens, positions[:, :seen], context[:, :seen],
                                   segments[:, :seen])
        else:
            logits = batch.decode(tokens[:, -1], positions[:, seen - 1])
        last = (lengths + step + 1 >= out_seq_length).to(batch.device)
        tokens, parents = strategy.forward(logits, tokens, last)
        if parents is not None:  # beams picked and repeated rows: everything follows them
            cpu = parents.cpu()
            positions, context, segments = positions[cpu], context[cpu], segments[cpu]
            if use_cache:
                batch.select(parents)
        if on_step is not None:
            on_step(tokens, width)
        if strategy.is_done:
            break
    return strategy.finalize(tokens)


@dataclass
class Filled:
    answers: list[str]         # per beam: the whole text, blanks filled, trailing eos dropped
    styled: list[str]          # per beam: the same for a terminal, blanks underlined
    plain: list[str]           # per beam: as `styled`, without the terminal's colours
    pieces: list[list[str]]    # per beam: text, blank, text, blank, ..., text

    @property
    def blanks(self) -> list[list[str]]:
        """Per beam: the text of each blank, left to right."""
        return [p[1::2] for p in self.pieces]


def spaced(neighbour: str) -> bool:
    """Whether a space sets a blank apart from `neighbour`, the character of the text next to
    it on one side ("" at either end of the text). Latin script gets one, as the reference
    shows English; CJK none, whatever the fill; nor does the text's end, nor text with a space
    there already. The playground's `spaced` is this rule too."""
    return bool(neighbour) and not (neighbour.isspace() or CLOSE_SCRIPT.match(neighbour))


def styled(pieces: Sequence[str], prompt: Prompt, color: bool = True) -> str:
    """Blanks underlined as the reference shows them (`color`), each spaced off its
    neighbouring text by `spaced`."""
    open_, close = STYLE[prompt.use_gmask] if color else ("", "")
    out = []
    for k, p in enumerate(pieces):
        if k % 2 == 0:
            out.append(p)
            continue
        out += [" " if spaced(pieces[k - 1][-1:]) else "", open_, p, close,
                " " if spaced(pieces[k + 1][:1]) else ""]
    return "".join(out)


@dataclass
class Filling:
    """One prompt's progress through its blanks, as the reference keeps it (§2.4, §6.6)."""
    prompt: Prompt
    num_outputs: int
    outputs: list[list[int]] = field(default_factory=list)
    last_pos: list[int] = field(default_factory=list)
    pieces: list[list[str]] = field(default_factory=list)
    skipped: int = field(default=0, init=False)  # blanks left empty: no length budget left

    def __post_init__(self):
        self.outputs = [list(self.prompt.tokens)]
        self.last_pos = [0] * self.num_outputs
        self.pieces = [[] for _ in range(self.num_outputs)]

    @property
    def seq(self) -> list[int]:
        # Only the best beam's sequence goes on to the next blank.
        return self.outputs[0]

    @property
    def num_blanks_filled(self) -> int:
        return len(self.pieces[0]) // 2

    def has_blank(self) -> bool:
        return self.prompt.mask_id in self.seq

    def mask_position(self) -> Optional[int]:
        """Where the blank being filled sits, as its positions need it: None for [gMASK],
        whose positions count on."""
        return None if self.prompt.use_gmask else self.seq.index(self.prompt.mask_id)

    def next_context(self, tokenizer, out_seq_length: int) -> Optional[list[int]]:
        """The context the next blank is generated after (the sequence and `sop`), or None
        when no blank is left. A blank with no length budget left stays empty and counts in
        `skipped`; the one after may still fit, as an empty blank takes its mask away."""
        sop = tokenizer.get_command("sop")
        while self.has_blank():
            context = self.seq + [sop]
            if len(context) < out_seq_length:
                return context
            self.take([context], tokenizer, ())
            self.skipped += 1
        return None

    def take(self, results: list[list[int]], tokenizer, end_tokens,
             texts: Optional[Sequence[str]] = None) -> None:
        """Put each result's blank in place of the mask; record it for display. `texts`
        replaces the blanks' decoded texts (a stop string cut them short)."""
        mask_position, sop = self.seq.index(self.prompt.mask_id), len(self.seq)  # where `sop` is
        self.outputs = []
        for i, output in enumerate(results):
            end = len(output) - (1 if len(output) > sop + 1 and output[-1] in end_tokens else 0)
            end -= tokenizer.incomplete_tail(output[sop + 1:end])  # a character cut short
            prefix = tokenizer.detokenize(output[self.last_pos[i]:mask_position])
            blank = tokenizer.detokenize(output[sop + 1:end]) if texts is None else texts[i]
            self.pieces[i] += [prefix, blank]
            self.last_pos[i] = mask_position + end - (sop + 1)
            self.outputs.append(output[:mask_position] + output[sop + 1:end]
                                + output[mask_position + 1:sop])

    def result(self, tokenizer) -> Filled:
        eos = tokenizer.get_command("eos")
        answers, pieces = [], []
        for i, output in enumerate(self.outputs):
            if output and output[-1] == eos:
                output = output[:-1]
            pieces.append(self.pieces[i] + [tokenizer.detokenize(output[self.last_pos[i]:])])
            answers.append(tokenizer.detokenize(output))
        return Filled(answers, [styled(p, self.prompt) for p in pieces],
                      [styled(p, self.prompt, color=False) for p in pieces], pieces)


def fill_blanks(model, tokenizer, prompts: Sequence[Prompt], strategy, out_seq_length: int,
                use_cache: bool = True,
                on_token: Optional[Callable[[int, int, list[int]], None]] = None) -> list[Filled]:
    """Fill every blank of every prompt; prompts of any lengths decode as one batch per blank.

    on_token(prompt index, blank index, ids of the blank so far) is called after each step
    when the strategy keeps one sequence per prompt (for streaming output).
    """
    states = [Filling(p, strategy.num_beams) for p in prompts]
    while True:
        contexts = {i: s.next_context(tokenizer, out_seq_length) for i, s in enumerate(states)}
        active = [i for i, context in contexts.items() if context is not None]
        if not active:
            break
        positions = [states[i].mask_position() for i in active]
        on_step = None
        if on_token is not None and strategy.num_beams == 1:
            def on_step(tokens, width, active=active):
                for row, i in enumerate(active):
                    on_token(i, states[i].num_blanks_filled,
                             [t for t in tokens[row, width:].tolist() if t >= 0])
        results = batch_filling_sequence(model, [contexts[i] for i in active], positions,
                                         strategy, out_seq_length, use_cache, on_step)
        for i, result in zip(active, results):
            states[i].take(result, tokenizer, strategy.end_tokens)
    return [s.result(tokenizer) for s in states]


def blank_ids(ids: Iterable[int], end_tokens: Collection[int]) -> list[int]:
    """What a blank's text is made of: its generated ids without the end token, nor the -1
    that follow it in a row that ended before the others."""
    return [t for t in ids if t >= 0 and t not in end_tokens]


def settled(tokenizer, ids: Sequence[int]) -> str:
    """The text of a growing blank's ids (`blank_ids`), without a trailing character whose
    byte pieces have not all come yet: it would read as U+FFFD, then change. A U+FFFD for
    bytes no continuation can mend stays, as SentencePiece decodes it."""
    return tokenizer.detokenize(ids[:len(ids) - tokenizer.incomplete_tail(ids)])


class Shown:
    """What has been shown of a blank's growing text. Detokenizing more ids may change its
    last characters: a text that no longer extends what was shown waits until it does."""

    def __init__(self):
        self.text = ""

    def delta(self, text: str) -> str:
        """What `text` adds to what was shown, now shown too."""
        if not text.startswith(self.text):
            return ""
        new, self.text = text[len(self.text):], text
        return new
