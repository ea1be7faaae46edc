"""Serve a GLM over HTTP: OpenAI-style completions that fill [MASK]/[sMASK]/[gMASK], blank
filling with beam search, and a web playground, with concurrent requests decoded together.

    python -m glm130b.serve $MODEL_ARGS --port 8000
    torchrun --nproc_per_node 8 -m glm130b.serve $MODEL_ARGS    # tensor parallel

Rank 0 answers HTTP and schedules; under tensor parallelism every rank runs each forward pass.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Optional

from .cli import (add_api_key_args, api_key, config_from_args, model_config, require_at_least_one,
                  run)
from .errors import Stopped, UsageError
from .generation import DecodeBatch
from .initialize import RuntimeConfig, add_initialization_args, initialize_model_and_tokenizer
from .parallel import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from .serving import ServingConfig, build
from .serving.scheduler import MirroredBatch, follow

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_serving_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("serving")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback only; 0.0.0.0 for every interface)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--model-name", default=None,
                   help="the id clients pass as 'model' (default: the --load folder's name)")
    add_api_key_args(g, "require 'Authorization: Bearer KEY' on /v1")
    g.add_argument("--max-batch-size", type=int, default=32,
                   help="rows decoded together: a sampled choice is one, a beam search num_beams")
    g.add_argument("--max-queue", type=int, default=256,
                   help="requests waiting for a place; more are refused with 503")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds, queue included")
    g.add_argument("--max-request-bytes", type=int, default=1 << 20)
    g.add_argument("--default-max-tokens", type=int, default=64,
                   help="max_tokens of a request that gives none (less where the prompt leaves "
                        "less room in the model's length)")
    g.add_argument("--max-tokens-limit", type=int, default=None,
                   help="largest max_tokens a request may ask (default: the model's length)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_initialization_args(parser)
    add_serving_args(parser)
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "max_batch_size", "max_queue", "max_request_bytes",
                         "default_max_tokens")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    if not 0 <= args.port < 65536:
        parser.error("--port must lie in [0, 65535]")
    return args


def _stopped(*_):
    raise Stopped


def serve(model, tokenizer, config: ServingConfig) -> None:
    """Rank 0: the scheduler on a thread of its own, uvicorn on this one."""
    import uvicorn

    tp = get_tensor_model_parallel_world_size()
    batch = MirroredBatch(model) if tp > 1 else DecodeBatch(model)
    scheduler, app = build(model, tokenizer, config, batch, idle=batch.ping if tp > 1 else None)
    if config.host not in LOOPBACK and not config.api_key:
        print(f"warning: serving on {config.host} without an API key (GLM_API_KEY or "
              "--api-key-file): anyone who reaches this port can use the model", file=sys.stderr)
    worker = threading.Thread(target=scheduler.run, name="glm130b-scheduler", daemon=True)
    worker.start()
    # uvicorn shuts down on SIGTERM or Ctrl-C, then raises the signal again: end with the
    # cleanup below and a normal return (the followers must hear that we stop).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="info",
                    timeout_graceful_shutdown=5)
    except Stopped:
        pass
    finally:
        scheduler.stop()
        worker.join()
        if tp > 1:
            batch.close()


def check_api_key_args(args: argparse.Namespace) -> Optional[str]:
    """The key /v1 requires, or None; rank 0 alone warns of a key on the command line."""
    return api_key(args.api_key, args.api_key_file, warn=int(os.environ.get("RANK", "0")) == 0)


def main(argv=None) -> int:
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) != args.model_parallel_size:
        raise UsageError(f"serving runs one model replica: launch exactly "
                         f"--model-parallel-size ({args.model_parallel_size}) processes")
    api_key = check_api_key_args(args)  # before the model: a missing file is found at once
    runtime = config_from_args(RuntimeConfig, args)
    model, tokenizer = initialize_model_and_tokenizer(model_config(args), runtime,
                                                      args.tokenizer_type, args.tokenizer_model)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not runtime.load and get_tensor_model_parallel_rank() == 0:
        print("warning: no --load, serving randomly initialised weights", file=sys.stderr)
    if get_tensor_model_parallel_rank() == 0:
        name = args.model_name or (os.path.basename(os.path.normpath(runtime.load))
                                   if runtime.load else "glm")
        serve(model, tokenizer, config_from_args(ServingConfig, args, model_name=name,
                                                 api_key=api_key))
    else:
        # Ctrl-C or the launcher's SIGTERM reaches every rank: the followers wait for rank 0
        # to finish its requests and tell them to stop (a crash of rank 0 ends them too).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        follow(DecodeBatch(model))
    return 0


if __name__ == "__main__":
    run(main)
