"""Data pipeline speed: preprocessing tokens/s with 1 and 2 workers (baseline: 1 worker), and
building + collating training samples per second (baseline: reading the raw 2000-token samples
from the memory-mapped file). Medians after a warm-up run; prints markdown tables.

    python benchmarks/bench_data.py [--num-documents 20000] [--batch 8]

Works on the quickstart's corpus and a 4000-piece BPE tokenizer trained on it, as the
quickstart does (or --tokenizer-model FILE). The data side runs on CPU whatever the machine.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
from functools import partial
from pathlib import Path

from common import timed
from glm130b.training.collate import collate
from glm130b.data.corpus import write_corpus
from glm130b.data.indexed import IndexedDataset, TokenSamples
from glm130b.data.infilling import Infilling, InfillingConfig
from glm130b.data.mixture import MixtureSampler, Source
from glm130b.data.preprocess import preprocess
from glm130b.tokenization import get_tokenizer
from glm130b.tokenization.train import train_tokenizer


def cpu_seconds() -> float:
    """CPU time of this process and its ended children: more workers cannot beat the cores
    that are free, but should not cost more CPU in all."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-documents", type=int, default=20000)
    p.add_argument("--tokenizer-model", default=None, help="default: train one on the corpus")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    corpus = str(work / "corpus.jsonl")
    write_corpus(corpus, args.num_documents, seed=1234)
    model = args.tokenizer_model or str(train_tokenizer([corpus], work / "tok", vocab_size=4000,
                                                        model_type="bpe"))
    tokenizer = get_tokenizer("sentencepiece", model)

    print(f"corpus: {args.num_documents} documents; tokenizer {model}")
    print("| preprocessing | median s | tokens/s | docs/s | vs 1 worker | CPU s, all processes |")
    print("|---|---|---|---|---|---|")
    base = None
    for workers in (1, 2):
        run = partial(preprocess, [corpus], str(work / f"w{workers}"), "sentencepiece", model,
                      workers=workers, progress=False)
        seconds = timed(run, repeats=args.repeats)
        cpu = cpu_seconds()
        summary = run()
        cpu = cpu_seconds() - cpu  # the workers count once the pool has ended
        base = base or seconds
        print(f"| {workers} worker(s) | {seconds:.2f} | {summary.tokens / seconds:,.0f} | "
              f"{summary.documents / seconds:,.0f} | {base / seconds:.2f}x | {cpu:.2f} |")

    config = InfillingConfig()
    raw = TokenSamples(IndexedDataset(work / "w1"), config.length_per_sample)
    sampler = MixtureSampler([Source("corpus", raw, 1.0)], Infilling(tokenizer, config))
    n = args.batch * args.batches
    samples = [sampler[k] for k in range(n)]
    read = timed(lambda: [raw[k % len(raw)] for k in range(n)], repeats=args.repeats)
    build = timed(lambda: [sampler[k] for k in range(n)], repeats=args.repeats)
    batch = timed(lambda: [collate(samples[i:i + args.batch], config.seq_length)
                           for i in range(0, n, args.batch)], repeats=args.repeats)
    both = build + batch
    print(f"\n{len(raw)} samples of {config.length_per_sample} tokens, seq_length "
          f"{config.seq_length}, batches of {args.batch}, {n} samples per measurement")
    print("| step | samples/s | time vs reading raw samples |")
    print("|---|---|---|")
    for name, seconds in (("read raw samples (baseline)", read),
                          ("build samples (mixture: 70% [gMASK] / 30% [MASK])", build),
                          ("collate into batches", batch), ("build + collate", both)):
        print(f"| {name} | {n / seconds:,.0f} | {seconds / read:.1f}x |")


if __name__ == "__main__":
    main()
