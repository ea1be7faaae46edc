"""The embedded default, end to end on CPU: generate the bilingual corpus, train a tokenizer on
it, tokenize the corpus into token files, pretrain the tiny GLM on them through the DeepSpeed
launcher (scripts/pretrain.sh with configs/pretrain_glm_tiny.sh), export the checkpoint to the
reference layout, reload it, score [gMASK] samples, fill [MASK] and [gMASK] blanks in English
and Chinese, evaluate it on the bundled sample tasks (tasks/sample), and serve it over HTTP to
concurrent clients.

    python -m glm130b.quickstart --output-dir quickstart-output
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .checkpoint.export import export
from .cli import run
from .config import GLMConfig
from .data.corpus import write_corpus
from .data.preprocess import preprocess
from .evaluation import evaluate_tasks, load_tasks
from .generate import use_color
from .generation import BaseStrategy, build_prompt, end_tokens, fill_blanks, padding_slices
from .model import GLM, AttentionMask
from .serving import local_server
from .tokenization import get_tokenizer
from .tokenization.train import train_tokenizer
from .tools.loadtest import run_load


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
REPO = Path(__file__).resolve().parents[1]
DEEPSPEED_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d ")
SAMPLE_TASKS = REPO / "tasks" / "sample"

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
    color = use_color("auto")  # as generate's --color auto: no escapes in a piped log
    for prompt, result in zip(prompts, filled):
        print(f"  {prompt.text}\n    -> {(result.styled if color else result.plain)[0]}")
    print(f"{len(prompts)} prompts filled in one batch in {time.perf_counter() - t:.2f} s")


def serve_some_blanks(model, tokenizer) -> None:
    """The same blanks through the HTTP API (`python -m glm130b.serve`), sent by concurrent
    clients and decoded together."""
    bodies = [dict(prompt=text, max_tokens=16, temperature=0) for text in BLANKS * 4]
    with local_server(model, tokenizer, model_name="glm-tiny") as server:
        report = run_load(server.url, bodies, concurrency=len(bodies))
    for body, answer in zip(bodies[:len(BLANKS)], report.answers):
        filled = answer["choices"][0]["filled"] if answer else "(failed)"
        print(f"  POST /v1/completions {body['prompt']!r}\n    -> {filled!r}")
    print(f"{len(bodies)} clients at once: {report.summary()}")
    print("  to serve it yourself, with the playground at http://127.0.0.1:8000/:\n"
          "  MODEL_CONFIG=configs/model_glm_tiny.sh bash scripts/serve.sh")


def pretrain(out: Path, train_iters: int) -> Path:
    """Train glm-tiny as a user would: scripts/pretrain.sh, i.e. the DeepSpeed launcher running
    `python -m glm130b.pretrain` with configs/pretrain_glm_tiny.sh's recipe. The quickstart
    made a new corpus and tokenizer just now, so an earlier quickstart's checkpoints in its own
    folder cannot be continued: they are replaced (--overwrite-checkpoints)."""
    save = out / "checkpoints" / "pretrain"
    env = dict(os.environ, QUICKSTART_DIR=str(out), SAVE=str(save), TRAIN_ITERS=str(train_iters))
    script = REPO / "scripts" / "pretrain.sh"
    with subprocess.Popen(["bash", str(script), "--overwrite-checkpoints"], env=env, cwd=REPO,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # the trainer's progress; DeepSpeed's dated lines are noise
            if line.strip() and not DEEPSPEED_LOG.match(line):
                print("  " + line.rstrip(), flush=True)
    if proc.returncode:
        raise SystemExit(f"error: scripts/pretrain.sh failed (exit {proc.returncode})")
    return save


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", default="quickstart-output")
    p.add_argument("--num-documents", type=int, default=20000)
    p.add_argument("--vocab-size", type=int, default=4000, help="tokenizer pieces")
    p.add_argument("--train-iters", type=int, default=300)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    t = step("1. generate the bilingual fact corpus")
    corpus = out / "corpus.jsonl"
    docs, chars, size = write_corpus(str(corpus), args.num_documents, args.seed)
    print(f"{corpus}: {docs} documents, {chars:,} characters, {size / 1e6:.1f} MB "
          f"in {time.perf_counter() - t:.1f} s")

    t = step("2. train a sentencepiece tokenizer on it")
    # Short pieces: whole Chinese fact sentences would otherwise become single pieces, and a
    # prompt cut before its answer would tokenize unlike anything in training.
    model_file = train_tokenizer([str(corpus)], out / "tokenizer", vocab_size=args.vocab_size,
                                 model_type="bpe", max_piece_length=4)
    tokenizer = get_tokenizer("sentencepiece", str(model_file))
    sample = "The capital of France is Paris. 法国的首都是巴黎。"
    print(f"{model_file}: {tokenizer.num_text_tokens} pieces + 8 GLM specials "
          f"in {time.perf_counter() - t:.1f} s")
    print(f"  {sample!r} -> {tokenizer.tokenize(sample)}")

    step("3. tokenize the corpus into token files")
    preprocess([str(corpus)], str(out / "text"), "sentencepiece", str(model_file), workers=1)

    t = step(f"4. pretrain glm-tiny for {args.train_iters} steps (scripts/pretrain.sh: the "
             "DeepSpeed launcher, [gMASK] and [MASK] objectives)")
    save = pretrain(out, args.train_iters)
    steps = [json.loads(line) for line in (save / "train_log.jsonl").open()]
    losses = [r["loss"] for r in steps if "loss" in r]
    print(f"trained in {time.perf_counter() - t:.0f} s: loss {losses[0]:.3f} at the first step, "
          f"{sum(losses[-10:]) / len(losses[-10:]):.3f} over the last 10")

    step("5. export the training checkpoint to the reference layout")
    config = GLMConfig.from_preset("glm-tiny", hidden_dropout=0.0, attention_dropout=0.0)
    ckpt = out / "checkpoints" / "glm-tiny"
    export(save, ckpt, target_tp=1)
    print(f"{ckpt}: glm-tiny, {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_attention_heads} heads, in the layout generate/evaluate --load")

    t = step("6. reload it and score [gMASK] samples")
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
          f"(untrained: ln({config.vocab_size}) = {math.log(config.vocab_size):.3f})")

    step("7. fill blanks with it")
    fill_some_blanks(reloaded, tokenizer)

    step("8. evaluate it on the sample tasks (chance is 25% on facts-choice)")
    evaluate_tasks(reloaded, tokenizer, load_tasks([str(SAMPLE_TASKS)]),
                   output_path=str(out / "evaluation"))

    step("9. serve it over HTTP: OpenAI-style completions with [MASK], batched")
    serve_some_blanks(reloaded, tokenizer)
    print(f"\ndone: outputs in {out}/")
    return 0


if __name__ == "__main__":
    run(main)
