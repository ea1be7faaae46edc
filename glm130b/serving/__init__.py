"""Serving: continuous batching (`scheduler`), the HTTP API and the playground (`api`);
`python -m glm130b.serve` is the command, `local_server` embeds one in a Python program."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from ..generation import DecodeBatch
from .api import ServingConfig, create_app
from .scheduler import Scheduler


def build(model, tokenizer, config: Optional[ServingConfig] = None,
          batch: Optional[DecodeBatch] = None, idle: Optional[Callable[[], None]] = None):
    """The scheduler and the application for a loaded model (`config`'s host and port are
    for whoever listens); `idle` is called about once a minute while nothing runs."""
    config = ServingConfig() if config is None else config
    batch = DecodeBatch(model) if batch is None else batch  # an empty batch is falsy
    scheduler = Scheduler(batch, tokenizer, config.max_batch_size, config.max_queue, idle)
    return scheduler, create_app(scheduler, tokenizer, config, model.config)


@dataclass
class LocalServer:
    url: str
    scheduler: Scheduler


@contextlib.contextmanager
def local_server(model, tokenizer, **options) -> Iterator[LocalServer]:
    """A server on background threads for as long as the `with` block runs; `options` as
    `ServingConfig`'s fields, its port 0 here: a free one."""
    import uvicorn

    config = replace(ServingConfig(port=0), **options)
    scheduler, app = build(model, tokenizer, config)
    sock = socket.socket()
    sock.bind((config.host, config.port))
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
        yield LocalServer("http://%s:%d" % sock.getsockname(), scheduler)
    finally:
        server.should_exit = True
        scheduler.stop()
        for t in threads:
            t.join(timeout=30)
        sock.close()
