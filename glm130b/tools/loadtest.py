"""Load a running server with concurrent clients and report throughput and latency.

    python -m glm130b.tools.loadtest --url http://127.0.0.1:8000 --prompts prompts.txt \\
        --concurrency 32 --requests 128 --max-tokens 32

Each client sends its requests one after another over one keep-alive connection; the clients
run together. Request k is the k-th prompt (cycling) with seed --seed + k, so a run can be
checked against another (batched against one at a time) answer for answer.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from ..cli import add_api_key_args, api_key, run
from ..errors import UsageError


@dataclass
class Report:
    answers: list[Optional[dict]]   # per request: the response body, None if it failed
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] if ordered else float("nan")

    @property
    def tokens(self) -> int:
        return sum(a["usage"]["completion_tokens"] for a in self.answers if a)

    def summary(self) -> str:
        done = len(self.latencies)
        return (f"{done}/{len(self.answers)} requests in {self.seconds:.2f} s: "
                f"{done / self.seconds:.2f} requests/s, {self.tokens / self.seconds:.1f} tokens/s, "
                f"latency p50 {self.percentile(50) * 1000:.0f} ms, "
                f"p99 {self.percentile(99) * 1000:.0f} ms, {len(self.errors)} errors")


def post(conn: http.client.HTTPConnection, path: str, body: dict,
         api_key: Optional[str] = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request("POST", path, json.dumps(body), headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def run_load(url: str, bodies: list[dict], concurrency: int, path: str = "/v1/completions",
             api_key: Optional[str] = None, timeout: float = 600.0) -> Report:
    """Send every body, `concurrency` at a time; answers come back in the bodies' order."""
    parts = urlsplit(url)
    report = Report([None] * len(bodies))
    lock, cursor = threading.Lock(), iter(range(len(bodies)))

    def client():
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        while True:
            with lock:
                k = next(cursor, None)
            if k is None:
                break
            start = time.perf_counter()
            for _ in range(2):  # once more on a fresh connection if the old one was closed
                try:
                    status, answer = post(conn, path, bodies[k], api_key)
                    break
                except (OSError, http.client.HTTPException, ValueError) as e:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                    status, answer = 0, {"error": {"message": f"{type(e).__name__}: {e}"}}
            with lock:
                if status == 200:
                    report.answers[k] = answer
                    report.latencies.append(time.perf_counter() - start)
                else:
                    report.errors.append(f"request {k}: {status} {answer['error']['message']}")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - start
    return report


def completion_bodies(prompts: list[str], requests: int, max_tokens: int, seed: int,
                      **options) -> list[dict]:
    return [dict(prompt=prompts[k % len(prompts)], max_tokens=max_tokens, seed=seed + k,
                 **options) for k in range(requests)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--prompts", help="file with one prompt per line (default: two of [MASK] "
                                          "and [gMASK])")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    add_api_key_args(parser, "send 'Authorization: Bearer KEY'")
    parser.add_argument("--output", help="write every answer here, as JSON")
    args = parser.parse_args(argv)
    if args.prompts:
        try:
            with open(args.prompts, encoding="utf-8") as f:
                prompts = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UsageError(f"cannot read --prompts: {e}") from None
    else:
        prompts = ["The capital of France is [MASK].", "Two plus three is"]
    report = run_load(args.url, completion_bodies(prompts, args.requests, args.max_tokens,
                                                  args.seed),
                      args.concurrency, api_key=api_key(args.api_key, args.api_key_file))
    print(report.summary())
    for error in report.errors[:10]:
        print(f"  {error}", file=sys.stderr)
    if args.output:
        from ..files import atomic_write_text
        atomic_write_text(args.output, json.dumps(report.answers, ensure_ascii=False, indent=1))
    return 1 if report.errors else 0


if __name__ == "__main__":
    run(main)
