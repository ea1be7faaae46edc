"""Scored completions: `echo` and `logprobs` with GLM's blank-filling semantics, the tokenizer
as vLLM's endpoints show it, and prompts given as token ids.

An echoed prompt `CONTEXT[gMASK]CONTINUATION` (or [MASK]/[sMASK]) is read as the evaluator
reads a multiple-choice sample: everything up to the last mask is bidirectional context, and
the tokens after it are the start of the blank's fill, after `sop`, so their log-probabilities
are those `glm130b.evaluation.inference.choice_log_probs` sums. A prompt without a mask is a
fill of [gMASK] from an empty context: the reference's language-modelling window 0. Context
tokens have no log-probability in this frame: their entries are null. Without `echo`, the
prompt is framed as generation frames it (`build_prompt`: one blank).

A scored choice runs whole-sequence forwards, without the key/value cache, on the scheduler's
thread: one forward per scheduler step and generated token, so scoring and decoding take
turns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from ..errors import ApiError, PromptError
from ..generation import Prompt, blank_ids, end_tokens
from ..model import AttentionMask

MASKS = ("[MASK]", "[sMASK]", "[gMASK]")
WINDOW = 8  # tokens before one that are decoded with it: enough for a piece's leading space


def special_ids(tokenizer) -> dict[str, int]:
    """The special tokens a text may spell out: the masks, as prompts take them, and eos as
    the tokenizer renders it (lm-eval looks its id up by tokenizing that string)."""
    table = {m: tokenizer.get_command(m) for m in MASKS}
    eos = tokenizer.get_command("eos")
    table[tokenizer.detokenize([eos])] = eos
    return table


def tokenize(text: str, tokenizer) -> list[int]:
    """The text's ids, nothing added; each piece between special tokens is tokenized alone, so
    the ids of `A[gMASK]` are a prefix of those of `A[gMASK]B`, and B's are B's alone."""
    table = special_ids(tokenizer)
    pattern = "|".join(re.escape(s) for s in sorted(table, key=len, reverse=True))
    ids, start = [], 0
    for hit in re.finditer(pattern, text):
        ids += tokenizer.tokenize(text[start:hit.start()]) if hit.start() > start else []
        ids.append(table[hit.group()])
        start = hit.end()
    return ids + (tokenizer.tokenize(text[start:]) if start < len(text) else [])


def check_ids(ids: Sequence[int], tokenizer) -> None:
    bad = [i for i in ids if not 0 <= i < tokenizer.num_tokens]
    if bad:
        raise PromptError(f"token id {bad[0]} is outside the tokenizer's {tokenizer.num_tokens}")


def prompt_from_ids(ids: list[int], tokenizer, max_sequence_length: int) -> Prompt:
    """`build_prompt`'s rules for a prompt given as ids: fill [MASK] if present, else [sMASK],
    else [gMASK] (appended when there is no mask); eos after the text unless it ends in a
    mask."""
    check_ids(ids, tokenizer)
    masks = {m: tokenizer.get_command(m) for m in MASKS}
    kind = next((m for m in MASKS if masks[m] in ids), None)
    tokens, text = list(ids), tokenizer.detokenize(ids)
    if kind is None:
        kind, text = "[gMASK]", text + " [gMASK]"
        tokens.append(masks[kind])
    if tokens[-1] not in masks.values():
        tokens.append(tokenizer.get_command("eos"))
    if len(tokens) > max_sequence_length:
        raise PromptError(f"text too long: {len(tokens)} tokens, more than "
                          f"--max-sequence-length {max_sequence_length}")
    return Prompt(text, tokens, masks[kind], kind == "[gMASK]")


# ---- what is scored -----------------------------------------------------------------------

@dataclass
class Frame:
    """A scored sequence: `context` (mask included, bidirectional), `sop`, then `fill`, whose
    tokens are scored. `echoed` are the prompt's own ids, the last len(fill) of them the fill."""
    context: list[int]
    fill: list[int]
    echoed: list[int]
    mask_position: Optional[int]  # None: [gMASK], positions count on


def echo_frame(ids: list[int], tokenizer) -> Frame:
    """The prompt split at its last mask; without one, a [gMASK] fill from nothing."""
    masks = {tokenizer.get_command(m): m for m in MASKS}
    at = max((i for i, t in enumerate(ids) if t in masks), default=None)
    if at is None:
        return Frame([tokenizer.get_command("[gMASK]")], list(ids), list(ids), None)
    gmask = masks[ids[at]] == "[gMASK]"
    return Frame(list(ids[:at + 1]), list(ids[at + 1:]), list(ids), None if gmask else at)


def generation_frame(prompt: Prompt, tokenizer) -> Frame:
    """Generation's frame: the whole prompt is context and its first blank is filled."""
    if prompt.tokens.count(prompt.mask_id) != 1:
        raise PromptError("logprobs without echo fills one blank: give one mask")
    at = prompt.tokens.index(prompt.mask_id)
    return Frame(list(prompt.tokens), [], [], None if prompt.use_gmask else at)


def layout(frame: Frame, generated: Sequence[int], sop: int):
    """Tokens, positions and bidirectional flags [1, L] of the frame and what was generated."""
    tokens = frame.context + [sop] + frame.fill + list(generated)
    n = len(frame.context)
    positions = list(range(len(tokens)))
    if frame.mask_position is not None:
        positions[n:] = [frame.mask_position] * (len(tokens) - n)
    context = [i < n for i in range(len(tokens))]
    return (torch.tensor([tokens]), torch.tensor([positions]), torch.tensor([context]))


@torch.no_grad()
def whole_sequence(model, tokens, positions, context) -> torch.Tensor:
    """The logits of every position of a sequence, without the cache: [1, L, vocab]."""
    device = next(model.parameters()).device
    tokens, positions, context = (t.to(device) for t in (tokens, positions, context))
    return model(tokens, positions, AttentionMask(context, torch.ones_like(tokens)))


@dataclass
class Entry:
    token: int
    logprob: Optional[float]
    top: Optional[dict[int, float]]


def entry(token: int, log_probs: torch.Tensor, top_n: int, num_tokens: int) -> Entry:
    """The token's log-probability and the top_n tokens' (the vocabulary's padding rows aside),
    with the token's own always among them, as vLLM gives them."""
    values, ids = log_probs[:num_tokens].topk(min(top_n or 0, num_tokens))
    top = dict(zip(ids.tolist(), values.tolist()))
    top[token] = float(log_probs[token])
    return Entry(token, top[token], top)


# ---- the scheduler's job -----------------------------------------------------------------------

@dataclass
class ScoreJob:
    """One scored choice: the scheduler runs `step` until it returns True."""
    request: object
    index: int
    prompt_ids: list[int]         # as the client gave them: usage counts these
    frame: Frame
    strategy: object              # a BaseStrategy, seeded for this choice
    max_tokens: int
    top_n: int
    stop: Sequence[str] = ()
    echo: bool = False
    max_rows = 0                  # it takes no row of the decode batch
    generated: list[int] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    started: bool = False

    @property
    def completion_tokens(self) -> int:
        return len(self.generated)

    def step(self, forward, tokenizer) -> bool:
        """One forward: the fill's entries the first time, then one generated token."""
        logits = forward(*layout(self.frame, self.generated, tokenizer.get_command("sop")))[0]
        n, ends = len(self.frame.context), end_tokens(tokenizer)
        if not self.started:
            self.strategy.start(1, logits.device)
            rows = logits[n:n + len(self.frame.fill)].float().log_softmax(dim=-1)
            self.entries = [entry(t, r, self.top_n, tokenizer.num_tokens)
                            for t, r in zip(self.frame.fill, rows)]
            self.started = True
        if self.max_tokens == 0:
            return True
        last = logits[-1:]
        picked, _ = self.strategy.forward(last, torch.zeros(1, 0, dtype=torch.long,
                                                            device=last.device))
        token = int(picked[0, -1])
        self.generated.append(token)
        self.entries.append(entry(token, last[0].float().log_softmax(dim=-1), self.top_n,
                                  tokenizer.num_tokens))
        return self.ended(tokenizer, ends)

    def ended(self, tokenizer, ends) -> bool:
        text = tokenizer.detokenize(blank_ids(self.generated, ends))
        hits = [text.find(s) for s in self.stop if s in text]
        self.text = text[:min(hits)] if hits else text
        if hits or self.generated[-1] in ends:
            self.finish_reason = "stop"
            return True
        return len(self.generated) >= self.max_tokens


def plan_scored(prompts: list, req, stop: list[str], tokenizer, length: int, default: int,
                strategy: Callable[[int], object], prompt: Callable) -> list[ScoreJob]:
    """The scored choices of a checked completion request: `strategy(k)` is choice k's,
    `prompt(given)` generation's prompt (for logprobs without echo)."""
    jobs = []
    for i, given in enumerate(prompts):
        try:
            ids = tokenize(given, tokenizer) if isinstance(given, str) else given
            check_ids(ids, tokenizer)
            if req.echo:
                frame = echo_frame(ids, tokenizer)
            else:
                framed = prompt(given)
                ids, frame = framed.tokens, generation_frame(framed, tokenizer)
        except PromptError as e:
            raise ApiError(400, f"prompt: {e}", "prompt") from None
        used = len(frame.context) + 1 + len(frame.fill)  # the fill comes after `sop`
        max_tokens = (req.max_tokens if req.max_tokens is not None
                      else max(min(default, length + 1 - used), 0))
        if used + max(max_tokens, 1) - 1 > length:  # the last token is never fed back
            raise ApiError(400, f"the prompt is {len(ids)} tokens: scored after `sop`, with "
                                f"max_tokens {max_tokens}, it exceeds the model's {length}",
                           "prompt")
        for j in range(req.n):
            k = i * req.n + j
            jobs.append(ScoreJob(None, k, ids, frame, strategy(k), max_tokens, req.logprobs,
                                 stop, req.echo))
    return jobs


# ---- answers -----------------------------------------------------------------------------------

def token_strings(ids: Sequence[int], tokenizer) -> list[str]:
    """Each token's text in context: what decoding it adds to the few tokens before it (a
    SentencePiece piece alone would lose its leading space)."""
    out = []
    for i, t in enumerate(ids):
        before = tokenizer.detokenize(ids[max(0, i - WINDOW):i])
        both = tokenizer.detokenize(ids[max(0, i - WINDOW):i + 1])
        out.append(both[len(before):] if both.startswith(before) else tokenizer.detokenize([t]))
    return out


def logprobs_view(job: ScoreJob, tokenizer, offset: int) -> dict:
    """OpenAI's legacy shape: per token its string, log-probability, top alternatives (by
    string) and where its text starts in the choice's text (`offset`: where that starts)."""
    if job.echo:
        ids = job.frame.echoed + job.generated
        entries = [None] * (len(job.frame.echoed) - len(job.frame.fill)) + job.entries
        entries[:1] = [None] * len(entries[:1])  # nothing comes before the first token
    else:
        ids, entries = job.generated, job.entries[len(job.frame.fill):]
    strings = token_strings(ids, tokenizer)
    offsets = [offset + sum(map(len, strings[:i])) for i in range(len(strings))]

    def top(e: Optional[Entry], string: str):
        if e is None:
            return None
        named = {tokenizer.detokenize([t]): v for t, v in e.top.items() if t != e.token}
        return dict(named, **{string: e.logprob})

    return dict(tokens=strings, token_logprobs=[e and e.logprob for e in entries],
                top_logprobs=[top(e, s) for e, s in zip(entries, strings)], text_offset=offsets)


def scored_choice(job: ScoreJob, tokenizer) -> dict:
    prompt = "".join(token_strings(job.frame.echoed, tokenizer)) if job.echo else ""
    logprobs = logprobs_view(job, tokenizer, 0 if job.echo else len(
        tokenizer.detokenize(job.prompt_ids)))
    return dict(index=job.index, text=prompt + job.text, finish_reason=job.finish_reason,
                logprobs=logprobs if job.top_n is not None else None)


def scored_usage(jobs: Sequence[ScoreJob]) -> dict:
    # the n choices of one prompt share its ids
    prompt = sum({id(j.prompt_ids): len(j.prompt_ids) for j in jobs}.values())
    completion = sum(j.completion_tokens for j in jobs)
    return dict(prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion)


def tokenizer_info(tokenizer, max_model_len: int, model_name: str) -> dict:
    """What vLLM's GET /tokenizer_info gives and lm-eval reads: eos_token (its id: the first
    of /tokenize's ids for it), and bos_token, lm-eval's prefix for an empty context: [gMASK],
    so that an empty context is scored as a [gMASK] fill from nothing."""
    eos = tokenizer.detokenize([tokenizer.get_command("eos")])
    return dict(tokenizer_class=type(tokenizer).__name__, model=model_name, eos_token=eos,
                bos_token="[gMASK]", pad_token=None, model_max_length=max_model_len,
                max_model_len=max_model_len, vocab_size=tokenizer.num_tokens,
                mask_tokens=list(MASKS), add_special_tokens=False)
