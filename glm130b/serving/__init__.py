"""Serving: continuous batching (`scheduler`), the HTTP API and the playground (`api`);
`python -m glm130b.serve` is the command, `local_server` embeds one in a Python program."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from ..generation import DecodeBatch
from .api import Settings, create_app
from .scheduler import Scheduler


def build(model, tokenizer, batch: Optional[DecodeBatch] = None, max_batch_size: int = 32,
          max_queue: int = 256, idle=None, model_name: str = "glm", **settings):
    """The scheduler and the application for a loaded model; `settings` as `api.Settings`."""
    batch = DecodeBatch(model) if batch is None else batch  # an empty batch is falsy
    scheduler = Scheduler(batch, tokenizer, max_batch_size, max_queue, idle)
    settings = Settings(model_name=model_name,
                        max_sequence_length=model.config.max_sequence_length,
                        vocab_size=model.config.vocab_size, **settings)
    return scheduler, create_app(scheduler, tokenizer, settings)


@dataclass
class LocalServer:
    url: str
    scheduler: Scheduler


@contextlib.contextmanager
def local_server(model, tokenizer, port: int = 0, **options) -> Iterator[LocalServer]:
    """A server on a loopback port (0: a free one), on background threads, for as long as the
    `with` block runs. `options` as `build`'s."""
    import uvicorn

    scheduler, app = build(model, tokenizer, **options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    threads = [threading.Thread(target=scheduler.run, daemon=True),
               threading.Thread(target=server.run, kwargs=dict(sockets=[sock]), daemon=True)]
    for t in threads:
        t.start()
    try:
        while not server.started:
            if not threads[1].is_alive():
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        yield LocalServer(f"http://127.0.0.1:{sock.getsockname()[1]}", scheduler)
    finally:
        server.should_exit = True
        scheduler.stop()
        for t in threads:
            t.join(timeout=30)
        sock.close()
