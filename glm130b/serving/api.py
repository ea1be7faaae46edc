"""The HTTP API over the scheduler: OpenAI-style completions whose prompts may hold [MASK],
[sMASK] and [gMASK], the blank-filling view with beam search, health, models, and the web
playground at `/`.

Bad requests get a 4xx with one clear message, in OpenAI's error shape, never a traceback:
a body that is not JSON (too deep, not UTF-8, NaN, an unpaired surrogate: see `schema`) or
too large, an unknown field, a wrong type, an option out of range, a prompt too long for the
model. A 500 is kept for real faults: logged with a request id that its answer carries.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from importlib import resources
from typing import Optional, Union

from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..config import GLMConfig
from ..errors import ApiError, PromptError, Unavailable
from ..generation import SamplingConfig, build_prompt, build_strategy
from .schema import (CompletionRequest, DetokenizeRequest, FillRequest, Options,
                     TokenizeRequest, read_body)
from .scheduler import Choice, Scheduler, Request
from .scoring import (ScoreJob, check_ids, plan_scored, prompt_from_ids, scored_choice,
                      scored_usage, tokenize, tokenizer_info)

log = logging.getLogger("glm130b.serve")
MAX_STOP = 4
GREEDY_BELOW = 1e-5  # a temperature this low samples the top token anyway


@dataclass
class ServingConfig:
    """How a model is served: `python -m glm130b.serve`'s serving flags, under their names."""
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "glm"                  # the id clients pass as 'model'
    api_key: Optional[str] = None            # None: /v1 is open
    max_batch_size: int = 32                 # rows decoded together
    max_queue: int = 256                     # requests waiting for a place; more get 503
    request_timeout: float = 300.0           # seconds, queue included
    max_request_bytes: int = 1 << 20
    default_max_tokens: int = 64
    max_tokens_limit: Optional[int] = None   # None: what the model's length allows


def error_body(status: int, message: str, param: Optional[str] = None,
               request_id: Optional[str] = None) -> dict:
    """OpenAI's error shape; a server error also names the request, as the log does."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    error = {"message": message, "type": kind, "param": param, "code": status}
    if request_id is not None:
        error["request_id"] = request_id
    return {"error": error}


def error_response(status: int, message: str, param: Optional[str] = None,
                   request_id: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, request_id), status_code=status)


class InternalErrors:
    """ASGI middleware: an exception no handler took is a 500 that carries the id of its log
    line. Starlette's own handler would log the traceback a second time, without the id."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as e:
            ident = uuid.uuid4().hex[:12]
            log.exception("request %s: internal error on %s %s", ident, scope.get("method"),
                          scope.get("path"))
            if started:  # too late for a status line: the server closes the connection
                raise
            answer = error_response(500, f"internal error ({type(e).__name__}); the server "
                                         f"log has request {ident}", request_id=ident)
            await answer(scope, receive, send)


# ---- from a request to the scheduler's choices ----------------------------------------------

class Planner:
    """Turns a validated request into choices, checking what only the model can tell: the
    prompt's length, the budget, the rows the batch can hold."""

    def __init__(self, tokenizer, config: ServingConfig, model: GLMConfig):
        self.tokenizer, self.config, self.model = tokenizer, config, model

    def check_model(self, name: Optional[str]) -> None:
        if name is not None and name != self.config.model_name:
            raise ApiError(404, f"model '{name}' is not served here; this server has "
                                f"'{self.config.model_name}'", "model")

    def choices(self, texts: list[Union[str, list[int]]], req: Options, n: int,
                beam: Optional[FillRequest] = None) -> list[Choice]:
        """Runs off the event loop: tokenizing a long prompt takes a while."""
        s, length = self.config, self.model.max_sequence_length
        stop = self.check(texts, req, n * (beam.num_beams if beam is not None else 1))
        if beam is not None and (req.stream or stop):
            raise ApiError(400, "beam search answers once, at the end: it takes neither "
                                "stream nor stop", "stream" if req.stream else "stop")
        limit = s.max_tokens_limit or length
        choices = []
        for i, text in enumerate(texts):
            prompt = self.prompt(text)
            room = length - len(prompt.tokens) - 1  # its `sop` comes first
            # Not given: the server's default, or what room the model leaves.
            max_tokens = req.max_tokens or min(s.default_max_tokens, limit, room)
            if max_tokens > room:
                raise ApiError(400, f"the prompt is {len(prompt.tokens)} tokens: with "
                                    f"max_tokens {max_tokens} it exceeds the model's "
                                    f"{length}", "max_tokens")
            if max_tokens < 1:
                raise ApiError(400, f"prompt: {len(prompt.tokens)} tokens leave no room to "
                                    f"generate in the model's {length}", "prompt")
            # The reference's budget (--out-seq-length) counts the prompt and its `sop`.
            out_seq_length = len(prompt.tokens) + 1 + max_tokens
            for j in range(n):
                k = i * n + j
                choices.append(Choice(None, k, prompt, self.strategy(req, beam, k), out_seq_length,
                                      stop))
        return choices

    def prompt(self, text: Union[str, list[int]]):
        """Generation's prompt, from text or from token ids."""
        length = self.model.max_sequence_length
        try:
            if isinstance(text, str):
                return build_prompt(text, self.tokenizer, length)
            return prompt_from_ids(text, self.tokenizer, length)
        except PromptError as e:
            raise ApiError(400, f"prompt: {e}", "prompt") from None

    def scored(self, prompts: list, req: CompletionRequest) -> list[ScoreJob]:
        """Choices that `echo` or give `logprobs` (scoring.py says what is scored)."""
        stop = self.check(prompts, req, req.n)
        length = self.model.max_sequence_length
        default = min(self.config.default_max_tokens, self.config.max_tokens_limit or length)
        return plan_scored(prompts, req, stop, self.tokenizer, length, default,
                           lambda k: self.strategy(req, None, k), self.prompt)

    def check(self, texts: list, req: Options, rows_each: int) -> list[str]:
        """What every request is checked for; returns its stop strings."""
        s = self.config
        self.check_model(req.model)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > MAX_STOP or not all(stop):
            raise ApiError(400, f"stop: at most {MAX_STOP} non-empty strings", "stop")
        rows = len(texts) * rows_each
        if rows > s.max_batch_size:
            raise ApiError(400, f"the request needs {rows} rows (prompts x n x beams); this "
                                f"server decodes at most {s.max_batch_size} at once", "n")
        if not texts:
            raise ApiError(400, "prompt: give at least one prompt", "prompt")
        if req.top_k >= self.model.vocab_size:
            raise ApiError(400, f"top_k: must be below the vocabulary size "
                                f"{self.model.vocab_size}", "top_k")
        limit = s.max_tokens_limit or self.model.max_sequence_length
        if req.max_tokens is not None and req.max_tokens > limit:
            raise ApiError(400, f"max_tokens: at most {limit}", "max_tokens")
        return stop

    def strategy(self, req: Options, beam: Optional[FillRequest], k: int):
        """generate.py's strategy for these options. Choice k draws from seed + k (a random
        seed when none is given); temperature 0 is greedy, and so is one below
        GREEDY_BELOW, whose logits / temperature would overflow; top_p 1 keeps every token."""
        seed = (req.seed if req.seed is not None
                else int.from_bytes(uuid.uuid4().bytes[:7], "big")) + k
        greedy = req.temperature < GREEDY_BELOW
        sampling = SamplingConfig(
            temperature=1.0 if greedy else req.temperature, top_k=1 if greedy else req.top_k,
            top_p=0.0 if req.top_p >= 1.0 else req.top_p, seed=seed)
        if beam is not None:
            sampling = replace(sampling, sampling_strategy=beam.sampling_strategy,
                               num_beams=beam.num_beams, length_penalty=beam.length_penalty,
                               no_repeat_ngram_size=beam.no_repeat_ngram_size,
                               min_gen_length=beam.min_gen_length)
        return build_strategy(self.tokenizer, self.model.vocab_size, sampling)


# ---- responses ---------------------------------------------------------------------------

def segments(pieces: list[str]) -> list[dict]:
    return [dict(text=p, blank=k // 2 if k % 2 else None) for k, p in enumerate(pieces)]


def usage(request: Request) -> dict:
    # the n choices of one prompt share its Prompt
    prompt = sum({id(c.prompt): len(c.prompt.tokens) for c in request.choices}.values())
    completion = sum(c.completion_tokens for c in request.choices)
    return dict(prompt_tokens=prompt, completion_tokens=completion,
                total_tokens=prompt + completion)


def completion_choice(choice: Choice, tokenizer) -> dict:
    filled = choice.filling.result(tokenizer)
    return dict(index=choice.index, text="".join(filled.blanks[0]), logprobs=None,
                finish_reason=choice.finish_reason, filled=filled.answers[0],
                blanks=filled.blanks[0], segments=segments(filled.pieces[0]))


def fill_outputs(choice: Choice, tokenizer) -> dict:
    filled = choice.filling.result(tokenizer)
    return dict(text=choice.prompt.text, mask=tokenizer.detokenize([choice.prompt.mask_id]),
                finish_reason=choice.finish_reason,
                outputs=[dict(text=a, blanks=p[1::2], segments=segments(p))
                         for a, p in zip(filled.answers, filled.pieces)])


def prompt_list(prompt) -> list:
    """One prompt or many: text, a list of texts, ids, or a list of id lists."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def failed(request: Request, payload) -> Optional[str]:
    """The scheduler logs a request's end under its number: a server error names it."""
    return str(request.id) if payload[0] >= 500 else None


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


# ---- the application ---------------------------------------------------------------------

def create_app(scheduler: Scheduler, tokenizer, config: ServingConfig,
               model: GLMConfig) -> FastAPI:
    app = FastAPI(title="glm130b", docs_url=None, redoc_url=None)
    planner = Planner(tokenizer, config, model)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return error_response(e.status, e.message, e.param)

    @app.exception_handler(HTTPException)
    async def http_error(_, e: HTTPException):
        return error_response(e.status_code, str(e.detail))

    app.add_middleware(InternalErrors)

    def authorize(http: HttpRequest) -> None:
        if config.api_key is None:
            return
        given = http.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {config.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")

    @app.get("/health")
    async def health():
        if scheduler.failure is not None:
            return error_response(503, f"the model failed: {scheduler.failure}")
        return dict(status="ok", model=config.model_name, **scheduler.stats())

    @app.get("/v1/models")
    async def models(http: HttpRequest):
        authorize(http)
        return dict(object="list", data=[dict(id=config.model_name, object="model",
                                              created=created, owned_by="glm130b",
                                              max_sequence_length=model.max_sequence_length)])

    page = (resources.files(__package__) / "playground.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return page

    async def run(http: HttpRequest, choices: list[Choice], stream: bool, chunk, final):
        """Submit the choices; answer with `final(request)` when all are done, or stream
        `chunk(event)` as tokens come and then the final object."""
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def emit(kind, payload):
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
            except RuntimeError:  # the event loop has closed: the server is going down
                pass

        request = Request(choices, emit, timeout=config.request_timeout, streaming=stream)
        try:
            scheduler.submit(request)
        except Unavailable as e:
            raise ApiError(503, str(e)) from None

        if not stream:
            check = loop.time() + 1.0  # whether the client is still there, once a second
            try:
                while True:
                    try:
                        kind, payload = await asyncio.wait_for(
                            events.get(), timeout=max(0.0, check - loop.time()))
                    except asyncio.TimeoutError:
                        kind = None
                    if kind == "done":
                        return final(request)
                    if kind == "error":
                        return error_response(*payload, request_id=failed(request, payload))
                    if loop.time() >= check:
                        if await http.is_disconnected():
                            return error_response(499, "client closed the request")
                        check = loop.time() + 1.0
            finally:
                if not request.finished:
                    scheduler.cancel(request)

        async def body():
            try:
                while True:
                    kind, payload = await events.get()
                    if kind == "token":
                        yield sse(chunk(payload))
                    elif kind == "done":
                        answer = final(request)  # a list: more than one last chunk
                        for item in answer if isinstance(answer, list) else [answer]:
                            yield sse(item)
                        break
                    else:
                        status, message = payload
                        yield sse(error_body(status, message,
                                             request_id=failed(request, payload)))
                        break
                yield sse("[DONE]")
            finally:  # the client went away mid-stream: free its rows
                if not request.finished:
                    scheduler.cancel(request)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models/{name:path}")
    async def model_card(name: str, http: HttpRequest):
        authorize(http)
        planner.check_model(name)
        return dict(id=config.model_name, object="model", created=created, owned_by="glm130b",
                    max_sequence_length=model.max_sequence_length)

    @app.get("/tokenizer_info")
    async def tokenizer_card(http: HttpRequest):
        authorize(http)
        return tokenizer_info(tokenizer, model.max_sequence_length, config.model_name)

    @app.post("/tokenize")
    async def tokenize_text(http: HttpRequest):
        authorize(http)
        req = await read_body(http, TokenizeRequest, config.max_request_bytes)
        planner.check_model(req.model)
        ids = await run_in_threadpool(tokenize, req.prompt, tokenizer)
        return dict(tokens=ids, count=len(ids), max_model_len=model.max_sequence_length)

    @app.post("/detokenize")
    async def detokenize_ids(http: HttpRequest):
        authorize(http)
        req = await read_body(http, DetokenizeRequest, config.max_request_bytes)
        planner.check_model(req.model)
        try:
            check_ids(req.tokens, tokenizer)
        except PromptError as e:
            raise ApiError(400, f"tokens: {e}", "tokens") from None
        return dict(prompt=tokenizer.detokenize(req.tokens))

    @app.post("/v1/completions")
    async def completions(http: HttpRequest):
        authorize(http)
        req = await read_body(http, CompletionRequest, config.max_request_bytes)
        prompts = prompt_list(req.prompt)
        if req.stream_options is not None and not req.stream:
            raise ApiError(400, "stream_options: only with stream", "stream_options")
        scored = req.echo or req.logprobs is not None
        if req.max_tokens == 0 and not req.echo:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1 "
                                "(0 only with echo: the prompt scored)", "max_tokens")
        choices = await run_in_threadpool(planner.scored if scored else planner.choices,
                                          prompts, req, *([] if scored else [req.n]))
        ident = f"cmpl-{uuid.uuid4().hex}"
        head = dict(id=ident, object="text_completion", created=int(time.time()),
                    model=config.model_name)
        with_usage = req.stream_options is not None and req.stream_options.include_usage

        def chunk(event):
            return dict(head, choices=[dict(index=event["index"], text=event["text"],
                                            blank=event["blank"], logprobs=None,
                                            finish_reason=None)],
                        **(dict(usage=None) if with_usage else {}))

        def final(request):
            if scored:  # it streams as one chunk: the whole answer
                return finish(dict(head, choices=[scored_choice(c, tokenizer) for c in choices],
                                   usage=scored_usage(choices)))
            answer = dict(head, choices=[completion_choice(c, tokenizer) for c in choices],
                          usage=usage(request))
            if req.stream:  # the last chunk: no new text, each choice's whole answer
                for c in answer["choices"]:
                    c["text"] = ""
            return finish(answer)

        def finish(answer):
            """include_usage: OpenAI's last chunk, no choices and the usage."""
            if not with_usage:
                return answer
            return [dict(answer, usage=None), dict(head, choices=[], usage=answer["usage"])]

        return await run(http, choices, req.stream, chunk, final)

    @app.post("/v1/fill")
    async def fill(http: HttpRequest):
        authorize(http)
        req = await read_body(http, FillRequest, config.max_request_bytes)
        beam = req if req.sampling_strategy == "BeamSearchStrategy" else None
        [choice] = await run_in_threadpool(planner.choices, [req.text], req, 1, beam)
        head = dict(id=f"fill-{uuid.uuid4().hex}", created=int(time.time()),
                    model=config.model_name)

        def chunk(event):
            return dict(head, object="fill.chunk", **event)

        def final(request):
            return dict(head, object="fill", **fill_outputs(choice, tokenizer),
                        usage=usage(request))

        return await run(http, [choice], req.stream, chunk, final)

    return app
