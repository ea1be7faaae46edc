"""What a request may hold, and how its body is read: strict pydantic models for each
endpoint, and a JSON reader that answers 400 to anything that is not plain JSON (nested past
MAX_JSON_DEPTH, not UTF-8, NaN, an unpaired surrogate) or 413 to a body over the limit."""
from __future__ import annotations

import json
import re
from typing import Literal, Optional, Union

from fastapi import Request as HttpRequest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ApiError

MAX_LOGPROBS = 20  # top alternatives per token, as vLLM allows
MAX_JSON_DEPTH = 64  # far beyond any request's shape; Python's parser gives up near 1000
SURROGATE = re.compile(r"[\ud800-\udfff]")



class Options(BaseModel):
    """What both endpoints take. Strict: "1" is not a number, 1.0 not an integer."""
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_k: int = Field(0, ge=0)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=0, lt=2 ** 63)
    stream: bool = False


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class CompletionRequest(Options):
    prompt: Union[str, list[str], list[int], list[list[int]]]  # text, or token ids
    max_tokens: Optional[int] = Field(None, ge=0)  # 0: with echo, score the prompt only
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    n: int = Field(1, ge=1)
    user: Optional[str] = None
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_LOGPROBS)
    stream_options: Optional[StreamOptions] = None


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: GLM adds no special token, whatever add_special_tokens says."""
    model_config = ConfigDict(extra="forbid", strict=True)
    model: Optional[str] = None
    prompt: str
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: Optional[str] = None
    tokens: list[int]


class FillRequest(Options):
    """The reference's generation options, with scripts/generate.sh's values as defaults."""
    text: str
    top_p: float = Field(0.7, ge=0.0, le=1.0)
    sampling_strategy: Literal["BaseStrategy", "BeamSearchStrategy"] = "BaseStrategy"
    num_beams: int = Field(4, ge=1)
    # ((5 + length) / 6) ** length_penalty must stay a finite, non-zero float
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0)
    no_repeat_ngram_size: int = Field(3, ge=0)
    min_gen_length: int = Field(0, ge=0)


def validation_message(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "body"
    if first["type"] == "extra_forbidden":
        return f"unknown field '{field}'", field
    return f"{field}: {first['msg']}", field


def parse_json(body: bytes):
    """The body as JSON, strictly: no NaN or Infinity, no text that cannot be UTF-8, nothing
    nested deeper than MAX_JSON_DEPTH (which would otherwise end in a RecursionError)."""
    def constant(name):
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=constant)
    except RecursionError:
        raise ApiError(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # UnicodeDecodeError and the digit limit of int are ValueErrors
        raise ApiError(400, f"invalid JSON: {' '.join(str(e).split())}") from None
    check_json(data)
    return data


def check_json(data) -> None:
    """Walk the parsed body a level at a time, without recursion: how deep its containers
    nest, and unpaired surrogates (from \\ud800 escapes) that no tokenizer or answer could
    encode as UTF-8."""
    level, depth = [data], 0
    while level:
        deeper = []
        for value in level:
            if isinstance(value, dict):
                deeper += [*value.keys(), *value.values()]
            elif isinstance(value, list):
                deeper += value
            elif isinstance(value, str) and SURROGATE.search(value):
                raise ApiError(400, "invalid JSON: a string holds an unpaired surrogate")
        if any(isinstance(v, (dict, list)) for v in level):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        level = deeper


async def read_body(http: HttpRequest, model: type[BaseModel], limit: int):
    declared = http.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
    data = parse_json(bytes(body))
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, *validation_message(e)) from None
