"""The embedded default, end to end on CPU: generate the bilingual corpus, train a tokenizer on
it, build the tiny GLM, save and reload it in the reference checkpoint layout, score [gMASK]
samples with it, fill [MASK] and [gMASK] blanks in English and Chinese, and evaluate it on the
bundled sample tasks (tasks/sample).

    python -m glm130b.quickstart --output-dir quickstart-output
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, save_checkpoint
from .cli import run
from .config import GLMConfig
from .data.corpus import write_corpus
from .evaluation import evaluate_tasks, load_tasks
from .generation import BaseStrategy, build_prompt, end_tokens, fill_blanks, padding_slices
from .model import GLM, AttentionMask
from .tokenization import get_tokenizer
from .tokenization.train import train_tokenizer


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def gmask_batch(texts, tokenizer, seq_len: int):
    """[gMASK] samples as the pretraining objective builds them (reference §2.6): the first half
    of a document is the bidirectional context, the rest is predicted left to right."""
    gmask, sop = tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")
    rows, targets, contexts = [], [], []
    for text in texts:
        ids = tokenizer.tokenize(text)[: seq_len - 2]
        cut = max(1, len(ids) // 2)
        source, target = ids[:cut], ids[cut:]
        row = source + [gmask, sop] + target[:-1]
        label = [-100] * (len(source) + 1) + target
        pad = seq_len - len(row)
        rows.append(row + [0] * pad)
        targets.append(label + [-100] * pad)
        contexts.append(len(source) + 1)  # the [gMASK] is context; sop starts the generation
    tokens, labels = torch.tensor(rows), torch.tensor(targets)
    mask = AttentionMask.from_context_lengths(contexts, seq_len)
    return tokens, labels, mask


# The repository's bundled tasks, built from the same fact tables as the corpus.
SAMPLE_TASKS = Path(__file__).resolve().parents[1] / "tasks" / "sample"

BLANKS = ("The capital of France is [MASK].", "法国的首都是[MASK]。",
          "Two plus three is [gMASK]", "日本的首都是")


def fill_some_blanks(model, tokenizer, out_seq_length: int = 32) -> None:
    """Greedy fills of a few blanks in one batch, as `python -m glm130b.generate` makes them."""
    strategy = BaseStrategy(top_k=1, end_tokens=end_tokens(tokenizer),
                            invalid_slices=padding_slices(tokenizer, model.config.vocab_size))
    prompts = [build_prompt(text, tokenizer, model.config.max_sequence_length, out_seq_length)
               for text in BLANKS]
    t = time.perf_counter()
    filled = fill_blanks(model, tokenizer, prompts, strategy, out_seq_length)
    for prompt, result in zip(prompts, filled):
        print(f"  {prompt.text}\n    -> {result.styled[0]}")
    print(f"{len(prompts)} prompts filled in one batch in {time.perf_counter() - t:.2f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="quickstart-output")
    p.add_argument("--num-documents", type=int, default=20000)
    p.add_argument("--vocab-size", type=int, default=4000, help="tokenizer pieces")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    t = step("1. generate the bilingual fact corpus")
    corpus = out / "corpus.jsonl"
    docs, chars, size = write_corpus(str(corpus), args.num_documents, args.seed)
    print(f"{corpus}: {docs} documents, {chars:,} characters, {size / 1e6:.1f} MB "
          f"in {time.perf_counter() - t:.1f} s")

    t = step("2. train a sentencepiece tokenizer on it")
    model_file = train_tokenizer([str(corpus)], out / "tokenizer", vocab_size=args.vocab_size,
                                 model_type="bpe")
    tokenizer = get_tokenizer("sentencepiece", str(model_file))
    sample = "The capital of France is Paris. 法国的首都是巴黎。"
    print(f"{model_file}: {tokenizer.num_text_tokens} pieces + 8 GLM specials "
          f"in {time.perf_counter() - t:.1f} s")
    print(f"  {sample!r} -> {tokenizer.tokenize(sample)}")

    t = step("3. build glm-tiny and save it in the reference checkpoint layout")
    config = GLMConfig.from_preset("glm-tiny")
    if tokenizer.num_tokens > config.vocab_size:
        raise SystemExit(f"error: tokenizer has {tokenizer.num_tokens} ids, glm-tiny's "
                         f"vocabulary {config.vocab_size}")
    model = GLM(config)
    ckpt = out / "checkpoints" / "glm-tiny"
    save_checkpoint(model, ckpt, iteration=0)
    print(f"glm-tiny: {model.num_parameters():,} parameters, {config.num_layers} layers, "
          f"hidden {config.hidden_size}, {config.num_attention_heads} heads; saved to {ckpt}")

    t = step("4. reload it and score [gMASK] samples")
    with torch.device("meta"):
        reloaded = GLM(config)
    iteration = load_checkpoint(reloaded, ckpt)
    reloaded.eval()
    texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")][:16]
    tokens, labels, mask = gmask_batch(texts, tokenizer, config.max_sequence_length)
    t = time.perf_counter()
    with torch.no_grad():
        logits = reloaded(tokens, attention_mask=mask)
    elapsed = time.perf_counter() - t
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    print(f"loaded iteration {iteration}; forward of {tokens.numel():,} tokens in "
          f"{elapsed:.2f} s ({tokens.numel() / elapsed:,.0f} tokens/s)")
    print(f"loss on {int((labels != -100).sum())} predicted tokens: {loss.item():.3f} "
          f"(an untrained model is near ln({config.vocab_size}) = {math.log(config.vocab_size):.3f})")

    step("5. fill blanks with it (an untrained model fills them with noise)")
    fill_some_blanks(reloaded, tokenizer)

    step("6. evaluate it on the sample tasks (an untrained model scores near chance: 25% on "
         "facts-choice)")
    evaluate_tasks(reloaded, tokenizer, load_tasks([str(SAMPLE_TASKS)]),
                   output_path=str(out / "evaluation"))
    print(f"\ndone: outputs in {out}/")
    return 0


if __name__ == "__main__":
    run(main)
