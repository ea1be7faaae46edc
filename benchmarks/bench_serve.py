"""The server under load: 32 concurrent clients against continuous batching (--max-batch-size
32) and against one request at a time (--max-batch-size 1, the baseline, same run, same
requests). Prints throughput, p50/p99 latency, and whether both runs gave the same answers.

    python benchmarks/bench_serve.py [--device cuda] [--dtype bf16] [--preset glm-tiny]
        [--load CKPT --tokenizer-model tok.model] [--requests 128] [--concurrency 32]

Without --load: the preset's architecture with random weights and a tokenizer trained here on
the quickstart's corpus. Requests mix [MASK] (English and Chinese) and [gMASK] prompts from
that corpus, each with its own seed, all running to --max-tokens (no end token is banned, so
some end early, as real requests do).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from common import add_device_args
from glm130b import GLM, GLMConfig, load_checkpoint
from glm130b.data.corpus import generate_corpus
from glm130b.serving import local_server
from glm130b.tokenization import get_tokenizer
from glm130b.tokenization.train import train_tokenizer
from glm130b.tools.loadtest import completion_bodies, run_load
from glm130b.tools.memory import DTYPES


def tokenizer_and_model(args, folder: Path):
    if args.tokenizer_model:
        tokenizer = get_tokenizer("sentencepiece", args.tokenizer_model)
    else:
        corpus = folder / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                                  for t in generate_corpus(2000, 0)), encoding="utf-8")
        tokenizer = get_tokenizer("sentencepiece", str(train_tokenizer(
            [corpus], folder / "tok", vocab_size=2000, model_type="bpe", max_piece_length=4)))
    config = GLMConfig.from_preset(args.preset)
    torch.manual_seed(0)
    with torch.device("meta" if args.load else "cpu"):
        model = GLM(config)
    if args.load:
        load_checkpoint(model, args.load)
    return tokenizer, model.to(torch.device(args.device), DTYPES[args.dtype]).eval()


def prompts(count: int) -> list[str]:
    """Corpus sentences: the last word of every other one made a [MASK], the rest continued."""
    out = []
    for k, text in enumerate(generate_corpus(count, 1)):
        sentence = text.split("\n")[0][:120]
        words = sentence.rsplit(" ", 1)
        out.append(f"{words[0]} [MASK]." if k % 2 == 0 and len(words) == 2 else sentence)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(p)
    p.add_argument("--load", help="checkpoint in the reference layout (default: random weights)")
    p.add_argument("--tokenizer-model", help="sentencepiece model (default: trained here)")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1],
                   help="--max-batch-size of each run; the last is the baseline")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tokenizer, model = tokenizer_and_model(args, Path(folder))
    bodies = completion_bodies(prompts(args.requests), args.requests, args.max_tokens, seed=1,
                               top_p=0.7)
    print(f"device {args.device}, {args.dtype}, {args.preset}, {args.requests} requests from "
          f"{args.concurrency} clients, max_tokens {args.max_tokens}, nucleus 0.7")
    with local_server(model, tokenizer) as warm:  # first-call costs out of the figures
        run_load(warm.url, bodies[:4], 4)
    reports = {}
    for size in args.batch_sizes:
        with local_server(model, tokenizer, max_batch_size=size) as srv:
            reports[size] = run_load(srv.url, bodies, args.concurrency)
            peak = srv.scheduler.stats()["peak_rows"]
        print(f"--max-batch-size {size:>3} (peak {peak:>2} rows): {reports[size].summary()}",
              flush=True)
    base = reports[args.batch_sizes[-1]]
    print("| max batch | requests/s | tokens/s | p50 latency | p99 latency | "
          "tokens/s vs baseline |")
    print("|---|---|---|---|---|---|")
    for size, r in reports.items():
        print(f"| {size} | {len(r.latencies) / r.seconds:.2f} | {r.tokens / r.seconds:,.0f} | "
              f"{r.percentile(50) * 1000:,.0f} ms | {r.percentile(99) * 1000:,.0f} ms | "
              f"{(r.tokens / r.seconds) / (base.tokens / base.seconds):.2f}x |")
    same = all(a["choices"] == b["choices"] for r in reports.values()
               for a, b in zip(r.answers, base.answers) if a and b)
    print(f"answers identical across runs: {same}")


if __name__ == "__main__":
    main()
