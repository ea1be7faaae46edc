"""Continuous batching: the requests of many clients decode together, joining and leaving the
batch between steps.

A request holds one or more choices. A choice is one prompt's `Filling` decoded by its own
strategy (one row when sampling, up to `num_beams` rows with beam search), with its own seeded
generator, so its answer is what `python -m glm130b.generate` gives for that prompt alone,
whatever else shares the batch. Each step feeds every running row its last token; choices
whose next blank is ready (a new request, or the next [MASK] of a running one) have their
context run in the same step and join the batch; choices whose blank ended leave it. The
scheduler runs on one thread; clients talk to it through `submit` and `cancel`, and hear from
it through each request's `emit` callback.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional, Sequence

import torch

from ..errors import Unavailable
from ..parallel import broadcast_object
from ..generation import (BaseStrategy, DecodeBatch, Filling, Prompt, Shown, blank_ids, pad_left,
                          settled)
from .scoring import ScoreJob, whole_sequence

log = logging.getLogger("glm130b.serve")


@dataclass
class Choice:
    """One prompt filled with one strategy: its blanks one after another, streamed as text."""
    request: "Request"
    index: int
    prompt: Prompt
    strategy: object            # BaseStrategy or BeamSearchStrategy, seeded for this choice
    out_seq_length: int         # the reference's budget: context and generated, per blank
    stop: Sequence[str] = ()
    # what happens to it
    filling: Filling = field(init=False)
    finish_reason: str = field(init=False, default="stop")
    completion_tokens: int = field(init=False, default=0)
    tokens: torch.Tensor = field(init=False)  # [rows, context + generated], -1 after an end
    context_length: int = field(init=False, default=0)
    mask_position: Optional[int] = field(init=False, default=None)
    shown: Shown = field(init=False)  # what has been streamed of the current blank
    cut: Optional[tuple[int, str]] = field(init=False, default=None)  # by a stop: (ids, text)

    def __post_init__(self):
        self.filling = Filling(self.prompt, self.strategy.num_beams)

    @property
    def rows(self) -> int:
        return self.tokens.shape[0]

    @property
    def max_rows(self) -> int:
        return self.strategy.num_beams

    @property
    def blank(self) -> int:
        return self.filling.num_blanks_filled

    def next_blank(self, tokenizer, device: torch.device) -> bool:
        """Set up the next blank, as `fill_blanks` would; False when none is left."""
        context = self.filling.next_context(tokenizer, self.out_seq_length)
        if self.filling.skipped:
            self.finish_reason = "length"
        if context is None:
            return False
        self.tokens = torch.tensor([context], device=device)
        self.context_length, self.mask_position = len(context), self.filling.mask_position()
        self.shown, self.cut = Shown(), None
        self.strategy.start(1, device)
        return True

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's last token and its position ([MASK]: the mask's; [gMASK]: counting on)."""
        last = self.tokens.shape[1] - 1
        position = last if self.mask_position is None else self.mask_position
        return self.tokens[:, -1], torch.full((self.rows,), position, dtype=torch.long,
                                              device=self.tokens.device)

    def advance(self, logits: torch.Tensor,
                probs: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """Pick the next token of every row; returns which rows they continue (beam search).
        `probs`: a sampling strategy's probabilities, computed with other choices' rows."""
        budget = torch.tensor([self.tokens.shape[1] + 1 >= self.out_seq_length],
                              device=self.tokens.device)
        more = {} if probs is None else dict(probs=probs)
        self.tokens, parents = self.strategy.forward(logits, self.tokens, budget, **more)
        return None if parents is None else parents.cpu()

    def blank_done(self) -> bool:
        return self.strategy.is_done or self.cut is not None

    def stream(self, tokenizer) -> Optional[str]:
        """The new text of the blank (sampling only), held back where it could still turn
        into a stop string; a stop string ends the blank there."""
        if self.max_rows != 1 or not (self.request.streaming or self.stop):
            return None  # nobody reads the text before the end: no work per step
        ids = blank_ids(self.tokens[0, self.context_length:].tolist(), self.strategy.end_tokens)
        text = tokenizer.detokenize(ids)
        hits = [text.find(s) for s in self.stop if s in text]
        if hits:
            text = text[:min(hits)]
            kept = len(ids)
            while kept and not text.startswith(tokenizer.detokenize(ids[:kept])):
                kept -= 1
            self.cut = (kept, text)
        else:
            text = settled(tokenizer, ids)
            held = max((n for s in self.stop for n in range(1, min(len(s), len(text) + 1))
                        if text.endswith(s[:n])), default=0)
            text = text[:len(text) - held]
        return self.shown.delta(text) or None

    def end_blank(self, tokenizer) -> Optional[str]:
        """Put the blank in place; returns the text not streamed yet."""
        results = self.strategy.finalize(self.tokens)[0]
        ends = self.strategy.end_tokens
        texts = None
        # usage counts what was generated, also past where a stop string cut the text
        self.completion_tokens += len(results[0]) - self.context_length
        if self.cut is not None:
            kept, text = self.cut
            body = blank_ids(results[0][self.context_length:], ends)
            results, texts = [results[0][:self.context_length] + body[:kept]], [text]
        elif results[0][-1] not in ends:
            self.finish_reason = "length"
        self.filling.take(results, tokenizer, ends, texts)
        streamed = self.max_rows == 1 and self.request.streaming
        return (self.shown.delta(self.filling.pieces[0][-1]) or None) if streamed else None


@dataclass
class Request:
    """What a client asked for, and how to tell it what happens: `emit(kind, payload)` with
    kind "token" ({"index", "blank", "text"}), "done" (None) or "error" ((status, message)),
    called on the scheduler's thread."""
    choices: list[Choice]
    emit: Callable[[str, object], None]
    timeout: float = 300.0
    streaming: bool = True      # does the client read "token" events
    id: int = field(default_factory=itertools.count().__next__)
    created: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    finished: bool = False
    remaining: int = 0

    def __post_init__(self):
        for choice in self.choices:
            choice.request = self
        self.remaining = len(self.choices)

    def expired(self, now: float) -> bool:
        return now - self.created > self.timeout

    def finish(self, kind: str, payload=None) -> None:
        if not self.finished:
            self.finished = True
            tokens = sum(c.completion_tokens for c in self.choices)
            log.info("request %d: %s, %d choices, %d tokens in %.2f s", self.id,
                     kind if kind == "done" else f"{payload[0]} {payload[1]}", len(self.choices),
                     tokens, time.monotonic() - self.created)
            self.emit(kind, payload)


class Scheduler:
    """The scheduler: requests wait in `waiting` (at most `max_queue`), their choices in
    `ready` until the batch has room (at most `max_batch_size` rows), then decode in
    `running`; `run` steps until `stop`."""

    def __init__(self, batch: DecodeBatch, tokenizer, max_batch_size: int = 32,
                 max_queue: int = 256, idle: Optional[Callable[[], None]] = None):
        self.batch, self.tokenizer = batch, tokenizer
        self.max_batch_size, self.max_queue = max_batch_size, max_queue
        self.idle = idle                    # called about once a minute while nothing runs
        self.running: list[Choice] = []     # in batch row order
        self.ready: deque[Choice] = deque()     # admitted, their next blank waits to start
        self.waiting: deque[Request] = deque()  # not admitted yet
        self.scoring: deque[ScoreJob] = deque()  # admitted scored choices, one forward a step
        self.wake = threading.Condition()
        self.stopping = False
        self.failure: Optional[str] = None  # the model cannot run any more
        self.steps = self.peak_rows = self.cancelled = self.tokens = 0
        self._reported = (time.monotonic(), 0)  # when the last progress line was logged

    # ---- the clients' side (any thread) --------------------------------------------------
    def submit(self, request: Request) -> None:
        with self.wake:
            if self.failure is not None:
                raise Unavailable(f"the model failed and cannot decode: {self.failure}")
            if len(self.waiting) >= self.max_queue:
                raise Unavailable(f"server busy: {len(self.waiting)} requests are waiting "
                                  "already; retry later")
            self.waiting.append(request)
            self.wake.notify()

    def cancel(self, request: Request) -> None:
        """The client has gone: its rows leave the batch at the next step."""
        with self.wake:
            if not (request.cancelled or request.finished):
                request.cancelled = True
                self.cancelled += 1
            self.wake.notify()

    def stats(self) -> dict:
        return dict(running_requests=len({c.request.id for c in self.running}),
                    running_rows=sum(c.rows for c in self.running), waiting=len(self.waiting),
                    max_batch_size=self.max_batch_size, steps=self.steps, tokens=self.tokens,
                    peak_rows=self.peak_rows, cancelled=self.cancelled,
                    scoring=len(self.scoring))

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()

    # ---- the scheduler's thread -------------------------------------------------------------
    def run(self) -> None:
        while True:
            with self.wake:
                idle = not (self.stopping or self.busy())
                while not (self.stopping or self.busy()):
                    if not self.wake.wait(timeout=60) and self.idle is not None:
                        self.idle()
                if idle:  # rates count busy time only
                    self._reported = (time.monotonic(), self.tokens)
                if self.stopping:
                    break
            try:
                self.step()
            except Exception as e:  # the model itself failed: every running request with it
                log.exception("decoding step failed")
                for choice in self.running + list(self.ready) + list(self.scoring):
                    choice.request.finish("error", (500, f"decoding failed: {e}"))
                self.running, self.ready, self.scoring = [], deque(), deque()
                try:
                    self.batch.select(torch.zeros(0, dtype=torch.long))
                except Exception as again:  # e.g. a tensor-parallel peer is gone: give up
                    log.exception("cannot reset the batch")
                    with self.wake:
                        self.failure, self.stopping = str(again), True
        for choice in self.running + list(self.ready) + list(self.scoring):
            choice.request.finish("error", (503, "the server is shutting down"))
        for request in self.waiting:
            request.finish("error", (503, "the server is shutting down"))

    def busy(self) -> bool:
        return bool(self.running or self.ready or self.waiting or self.scoring)

    def step(self) -> None:
        self._reap()
        decoding = self.running
        logits = []
        if decoding:
            tokens, positions = zip(*(c.inputs() for c in decoding))
            logits.append(self.batch.decode(torch.cat(tokens), torch.cat(positions)))
        joining = self._admit()
        self._score()
        # running before their prefill: should it fail, `run` answers them with the others
        self.running = decoding + joining
        if joining:
            width = max(c.context_length for c in joining)
            logits.append(self.batch.prefill(*pad_left([c.tokens[0].tolist() for c in joining],
                                                       [c.mask_position for c in joining],
                                                       width)))
        if not self.running:
            return
        self.peak_rows = max(self.peak_rows, sum(c.rows for c in self.running))
        logits = torch.cat(logits)
        probs = self._probabilities(logits)
        keep, index, offset = [], [], 0
        for choice in self.running:
            rows, blank = choice.rows, choice.blank
            try:
                parents = choice.advance(logits[offset:offset + rows], probs.get(id(choice)))
                delta = choice.stream(self.tokenizer) or ""
                done = choice.blank_done()
                if done:
                    delta += choice.end_blank(self.tokenizer) or ""
                if delta:
                    choice.request.emit("token", dict(index=choice.index, blank=blank,
                                                      text=delta))
                if done:
                    self._proceed(choice, after_blank=True)
                else:
                    keep.append(choice)
                    index += (offset + (parents if parents is not None
                                        else torch.arange(choice.rows))).tolist()
            except Exception as e:
                log.exception("request %d failed", choice.request.id)
                choice.request.finish("error", (500, f"generation failed: {e}"))
            offset += rows
        if index != list(range(offset)):
            self.batch.select(torch.tensor(index, dtype=torch.long))
        self.running = keep
        self.steps += 1
        self.tokens += offset
        self._report()

    def _report(self, every: float = 10.0) -> None:
        """A progress line while busy: generated tokens/s since the last one, and the load."""
        now, (then, tokens) = time.monotonic(), self._reported
        if now - then >= every:
            log.info("%.1f tokens/s, %d rows running, %d requests waiting",
                     (self.tokens - tokens) / (now - then), sum(c.rows for c in self.running),
                     len(self.waiting))
            self._reported = (now, self.tokens)

    def _probabilities(self, logits: torch.Tensor) -> dict[int, torch.Tensor]:
        """Sampled choices with the same settings filter their rows together: one top-k/top-p
        pass for all, not one each (row by row it is a third of a step at batch 32). Each
        still draws from its own generator."""
        groups, offset = {}, 0
        for choice in self.running:
            if isinstance(choice.strategy, BaseStrategy):  # one row each
                groups.setdefault(choice.strategy.settings, []).append((choice, offset))
            offset += choice.rows
        probs = {}
        for members in groups.values():
            rows = torch.tensor([row for _, row in members], device=logits.device)
            together = members[0][0].strategy.probabilities(logits[rows])
            for k, (choice, _) in enumerate(members):
                probs[id(choice)] = together[k:k + 1]
        return probs

    def _proceed(self, choice: Choice, after_blank: bool) -> None:
        """The choice's next blank waits for a place in the batch (a running request's ahead
        of those not started yet), or the choice is done."""
        if choice.next_blank(self.tokenizer, self.batch.device):
            if after_blank:
                self.ready.appendleft(choice)
            else:
                self.ready.append(choice)
            return
        choice.request.remaining -= 1
        if choice.request.remaining == 0:
            choice.request.finish("done")

    def _score(self) -> None:
        """One forward of the oldest scored choice; it goes to the back while it generates,
        so that scored requests take turns with each other and with decoding."""
        if not self.scoring:
            return
        job = self.scoring.popleft()
        forward = getattr(self.batch, "score", None) or partial(whole_sequence, self.batch.model)
        try:
            done = job.step(forward, self.tokenizer)
        except Exception as e:
            log.exception("request %d failed", job.request.id)
            job.request.finish("error", (500, f"scoring failed: {e}"))
            return
        if not done:
            self.scoring.append(job)
            return
        job.request.remaining -= 1
        if job.request.remaining == 0:
            job.request.finish("done")

    def _rows(self) -> int:
        return sum(c.max_rows for c in self.running) + sum(c.max_rows for c in self.ready)

    def _admit(self) -> list[Choice]:
        """Choices that start a blank in this step, oldest first, while the batch has room."""
        with self.wake:
            while self.waiting and self._rows() + sum(
                    c.max_rows for c in self.waiting[0].choices) <= self.max_batch_size:
                for choice in self.waiting.popleft().choices:
                    if isinstance(choice, ScoreJob):
                        self.scoring.append(choice)
                    else:
                        self._proceed(choice, after_blank=False)
        joining, rows = [], sum(c.max_rows for c in self.running)
        while self.ready and rows + self.ready[0].max_rows <= self.max_batch_size:
            choice = self.ready.popleft()
            if not choice.request.finished:
                joining.append(choice)
                rows += choice.max_rows
        return joining

    def _reap(self) -> None:
        """Requests cancelled, timed out or failed leave the batch and the queues."""
        now = time.monotonic()
        for request in itertools.chain((c.request for c in self.running),
                                       (c.request for c in self.ready),
                                       (j.request for j in self.scoring)):
            if request.expired(now) and not request.finished:
                request.finish("error", (504, f"timed out after {request.timeout:g} s"))
        with self.wake:
            for request in list(self.waiting):
                if request.cancelled or request.finished:
                    self.waiting.remove(request)
                elif request.expired(now):
                    self.waiting.remove(request)
                    request.finish("error", (504, f"timed out after {request.timeout:g} s "
                                                  "waiting for a place in the batch"))
        gone = lambda c: c.request.cancelled or c.request.finished  # noqa: E731
        self.ready = deque(c for c in self.ready if not gone(c))
        self.scoring = deque(j for j in self.scoring if not gone(j))
        if any(gone(c) for c in self.running):
            keep, index, offset = [], [], 0
            for choice in self.running:
                if not gone(choice):
                    keep.append(choice)
                    index += range(offset, offset + choice.rows)
                offset += choice.rows
            self.batch.select(torch.tensor(index, dtype=torch.long))
            self.running = keep


class MirroredBatch(DecodeBatch):
    """The batch of tensor-parallel rank 0, which schedules: every call goes to the other ranks
    first, and they replay it on their own shards (`follow`), so that all ranks run the same
    forward passes with the same inputs. Only rank 0 samples."""

    def _tell(self, name: str, *args) -> None:
        broadcast_object((name, tuple(a.cpu() for a in args)))

    def prefill(self, *args):
        self._tell("prefill", *args)
        return super().prefill(*args)

    def decode(self, *args):
        self._tell("decode", *args)
        return super().decode(*args)

    def select(self, index):
        self._tell("select", index)
        super().select(index)

    def score(self, *args):
        """A scored choice's whole-sequence forward (`whole_sequence`), on every rank."""
        self._tell("score", *args)
        return whole_sequence(self.model, *args)

    def ping(self) -> None:
        """Keeps the followers' wait for the next call inside the process group's timeout."""
        self._tell("ping")

    def close(self) -> None:
        broadcast_object(None)


def follow(batch: DecodeBatch) -> None:
    """Ranks other than 0: replay rank 0's calls until it closes."""
    while (call := broadcast_object(None)) is not None:
        name, args = call
        if name == "score":  # a plain batch has no such call: the forward it stands for
            whole_sequence(batch.model, *args)
        elif name != "ping":
            getattr(batch, name)(*args)
