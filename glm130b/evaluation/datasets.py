"""Evaluation data: reading task files, and the model inputs the reference builds from them
(reference §2.2, §2.3, §2.5, §7.3).

A file is read line by line; a line that is not JSON, lacks a field or holds a label out of
range is set aside as `<file>:<line>: <why>` and the rest of the file is used. Under
`examples_limit(n)` reading stops after a file's first n examples (`--limit`).
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from ..errors import DataError
from ..model import AttentionMask, multiple_choice_mask


@dataclass
class FileData:
    """One task file: its examples (the units split across data-parallel ranks), the lines set
    aside, and whatever the file's metrics need besides the predictions."""
    path: str
    examples: list
    skipped: list[str] = field(default_factory=list)
    documents: list = field(default_factory=list)  # language modelling: the texts windowed
    single_token: bool = False  # multiple choice: every choice of the file is one token
    lines: list[int] = field(default_factory=list)  # jsonl: the line of each example (document)


# Set by the runner around Task.read, so that every task class reading through read_jsonl,
# custom ones included, is limited without a parameter of its own.
_LIMIT: ContextVar[Optional[int]] = ContextVar("examples_limit", default=None)


@contextmanager
def examples_limit(limit: Optional[int]) -> Iterator[None]:
    token = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def read_jsonl(path: str, build: Callable[[dict], object]) -> FileData:
    data, limit = FileData(path, []), _LIMIT.get()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(data.examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise DataError("a line must be a JSON object")
                data.examples.append(build(item))
                data.lines.append(number)
            except json.JSONDecodeError as e:
                data.skipped.append(f"{path}:{number}: not JSON ({e.msg})")
            except DataError as e:
                data.skipped.append(f"{path}:{number}: {e}")
    return data


def model_input(example, data: FileData, config) -> Optional[list[int]]:
    """The token ids an example puts before the model, for the results file: its context as
    cut to fit, or a language-model window; None for an example of a custom kind."""
    if data.documents:  # language modelling: (document, window)
        document_index, window = example
        start = window * config.generation_length
        return data.documents[document_index].tokens[start:start + config.max_seq_length - 1]
    text = getattr(example, "text", None)
    return text if isinstance(text, list) else None


def source_line(index: int, example, data: FileData) -> str:
    """`file:line` an example was read from; just the file for a plain text document."""
    if data.documents:
        line = data.documents[example[0]].line
    else:
        line = data.lines[index] if index < len(data.lines) else None
    return data.path if line is None else f"{data.path}:{line}"


def _ids(value, key: str, num_tokens: int) -> list[int]:
    if not (isinstance(value, list) and all(isinstance(i, int) for i in value)):
        raise DataError(f"field '{key}' must be token ids")
    if any(not 0 <= i < num_tokens for i in value):
        raise DataError(f"field '{key}' holds ids outside this tokenizer's {num_tokens} (made "
                        f"with another tokenizer? give '{key}_pretokenized' instead)")
    return value


def tokenized(item: dict, key: str, tokenizer):
    """The reference's lookup: `key` holds token ids (a list, or a list of lists), else
    `key_pretokenized` holds text (a string, or a list of strings) to tokenize."""
    n = tokenizer.num_tokens
    if key in item:
        value = item[key]
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return [_ids(v, key, n) for v in value]
        return _ids(value, key, n)
    raw = item.get(f"{key}_pretokenized")
    if isinstance(raw, str):
        return tokenizer.tokenize(raw)
    if isinstance(raw, list) and all(isinstance(r, str) for r in raw):
        return [tokenizer.tokenize(r) for r in raw]
    if raw is None:
        raise DataError(f"missing field '{key}_pretokenized' (or '{key}')")
    raise DataError(f"field '{key}_pretokenized' must be text or a list of texts")


def field_of(item: dict, key: str, kind=None):
    if key not in item:
        raise DataError(f"missing field '{key}'")
    if kind is not None and not isinstance(item[key], kind):
        raise DataError(f"field '{key}' must be {kind.__name__}, got {item[key]!r}")
    return item[key]


# ---- multiple choice (reference §2.3) --------------------------------------------------------

@dataclass
class ChoiceExample:
    text: list[int]
    choices: list[list[int]]
    label: int
    item: dict  # the line itself: custom tasks read their own fields from it


def choice_example(item: dict, tokenizer, max_seq_length: int) -> ChoiceExample:
    text, choices = tokenized(item, "inputs", tokenizer), tokenized(item, "choices", tokenizer)
    label = field_of(item, "label", int)
    if not choices or any(not isinstance(c, list) or not c for c in choices):
        raise DataError("every example needs choices, none of them empty")
    if not 0 <= label < len(choices):
        raise DataError(f"label {label} is out of range for {len(choices)} choices")
    # One [sop] serves all choices of an example whose choices are single tokens.
    choice_tokens = sum(map(len, choices))
    choice_tokens = 1 if choice_tokens == len(choices) else choice_tokens
    if choice_tokens + 2 >= max_seq_length:
        raise DataError(f"the choices take {choice_tokens} tokens, max_seq_length is "
                        f"{max_seq_length}")
    if len(text) + choice_tokens + 2 > max_seq_length:  # keep the end of the context
        text = text[len(text) - (max_seq_length - choice_tokens - 2):]
    return ChoiceExample(text, choices, label, item)


@dataclass
class ChoiceSample:
    """A shared context, then [sop] + choice[:-1] for each choice (or one [sop] for all when
    every choice of the file is one token). Choice i is scored by the log-probabilities of
    `targets[i]` at the rows `score_at[i]`."""
    tokens: list[int]
    positions: list[int]
    division: int  # context length, the mask included
    choice_lengths: list[int]
    score_at: list[list[int]]
    targets: list[list[int]]


def build_multiple_choice_sample(text: list[int], choices: list[list[int]], single_token: bool,
                                 mask_id: int, sop_id: int, use_task_mask: bool = False,
                                 use_multitask_encoding: bool = False) -> ChoiceSample:
    tokens, positions = list(text), list(range(len(text)))
    blank_filling = mask_id in text
    if blank_filling:
        mask_position = text.index(mask_id)
    else:
        mask_position = len(tokens)
        tokens.append(mask_id)
        positions.append(mask_position)
    division = len(tokens)
    pieces = [[c[0] for c in choices]] if single_token else choices
    score_at, targets, lengths = [], [], []
    for choice in pieces:
        n = 1 if single_token else len(choice)
        if use_task_mask:
            positions += range(division, division + n)
        elif use_multitask_encoding and not blank_filling:
            positions += range(mask_position, mask_position + n)
        else:
            positions += [mask_position] * n
        score_at.append(list(range(len(tokens), len(tokens) + n)))
        tokens += [sop_id] + choice[:n - 1]
        lengths.append(n)
    if single_token:
        score_at, targets = score_at * len(choices), [[t] for t in pieces[0]]
    else:
        targets = [list(c) for c in choices]
    return ChoiceSample(tokens, positions, division, lengths, score_at, targets)


def collate_choices(samples: list[ChoiceSample], device=None):
    """Tokens and positions [b, L] (0 after each sample's end) and the dense mask
    [b, 1, L, L] (True = blocked); a padding token sees only itself."""
    width = max(len(s.tokens) for s in samples)
    tokens = torch.zeros(len(samples), width, dtype=torch.long)
    positions = torch.zeros(len(samples), width, dtype=torch.long)
    blocked = ~torch.eye(width, dtype=torch.bool).repeat(len(samples), 1, 1, 1)
    for row, s in enumerate(samples):
        n = len(s.tokens)
        tokens[row, :n] = torch.tensor(s.tokens)
        positions[row, :n] = torch.tensor(s.positions)
        blocked[row, :, :n, :n] = multiple_choice_mask(s.division, s.choice_lengths)[0]
    return tokens.to(device), positions.to(device), blocked.to(device)


# ---- generation (reference §2.2) --------------------------------------------------------------

@dataclass
class GenerationExample:
    text: list[int]
    targets: list[list[int]]
    item: dict


def generation_example(item: dict, tokenizer, max_seq_length: int,
                       max_gen_length: int) -> GenerationExample:
    text, targets = tokenized(item, "inputs", tokenizer), tokenized(item, "targets", tokenizer)
    if targets and not isinstance(targets[0], list):
        targets = [targets]  # a single answer given as one string
    if len(text) + max_gen_length + 2 > max_seq_length:
        text = text[len(text) - (max_seq_length - max_gen_length - 2):]
    return GenerationExample(text, targets, item)


def build_generation_sample(text: list[int], mask_id: int, sop_id: int,
                            use_task_mask: bool = False,
                            unidirectional: bool = False) -> tuple[list[int], Optional[int]]:
    """(context ending in [sop], the position every generated token repeats or None when
    positions count on). Blank filling when the text holds the mask; otherwise the mask and
    [sop] go after the text, or before it for a unidirectional task."""
    if mask_id in text:
        if unidirectional or use_task_mask:
            raise DataError("blank filling needs [MASK] and bidirectional attention")
        mask_position, tokens = text.index(mask_id), text + [sop_id]
    else:
        mask_position = len(text)
        tokens = [mask_id, sop_id] + text if unidirectional else text + [mask_id, sop_id]
    return tokens, None if use_task_mask else mask_position


# ---- language modelling (reference §2.5) --------------------------------------------------------

@dataclass
class Document:
    tokens: list[int]
    num_words: int   # space-separated words of the raw text: the unit of perplexity
    num_bytes: int   # UTF-8 bytes of the raw text: the unit of bits per byte
    meta: dict = field(default_factory=dict)
    line: Optional[int] = None  # where a jsonl file holds it (empty documents are dropped)


def document(text: str, tokens: list[int], meta: Optional[dict] = None) -> Document:
    return Document(tokens, len(text.strip().split(" ")), len(text.encode("utf-8")), meta or {})


def num_windows(num_tokens: int, max_seq_length: int, generation_length: int) -> int:
    """Windows of max_seq_length - 1 tokens, each moved on by generation_length."""
    rest = max(num_tokens - (max_seq_length - 1), 0)
    return max(math.ceil(rest / generation_length) + 1, 1)


@dataclass
class Window:
    tokens: list[int]
    targets: list[int]  # aligned with tokens; -100 where nothing is scored
    context_length: int  # the bidirectional prompt, the mask included


def build_window(doc_tokens: list[int], index: int, max_seq_length: int,
                 generation_length: int, mask_id: int, sop_id: int,
                 unidirectional: bool = False) -> Window:
    """Window 0 scores all its tokens; a later one scores its last generation_length tokens
    with the rest as bidirectional prompt (every window scores all, if unidirectional)."""
    start = index * generation_length
    tokens = doc_tokens[start:start + max_seq_length - 1]
    if index == 0 or unidirectional:
        prompt, text = [], tokens
    else:
        cut = max_seq_length - 1 - generation_length
        prompt, text = tokens[:cut], tokens[cut:]
    return Window(prompt + [mask_id, sop_id] + text[:-1],
                  [-100] * (len(prompt) + 1) + text, len(prompt) + 1)


def collate_windows(windows: list[Window], device=None):
    """Tokens, positions, mask, targets; shorter windows padded at the end (never seen by a
    real token: the mask is causal after each prompt)."""
    width = max(len(w.tokens) for w in windows)
    tokens = torch.zeros(len(windows), width, dtype=torch.long)
    targets = torch.full((len(windows), width), -100, dtype=torch.long)
    for row, w in enumerate(windows):
        tokens[row, :len(w.tokens)] = torch.tensor(w.tokens)
        targets[row, :len(w.targets)] = torch.tensor(w.targets)
    positions = torch.arange(width).expand(len(windows), width)
    mask = AttentionMask.from_context_lengths([w.context_length for w in windows], width)
    return (tokens.to(device), positions.to(device),
            AttentionMask(mask.context.to(device)), targets.to(device))
