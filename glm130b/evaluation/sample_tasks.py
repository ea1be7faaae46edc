"""tasks/sample: small bundled tasks from the quickstart's fact tables, in English and Chinese.

    python -m glm130b.evaluation.sample_tasks --output tasks/sample

- facts-choice (multiple choice): "The capital of France is" with four objects of the same
  relation as choices, one file per prompt template, so that the report's max / median /
  average over templates means something. The corpus states every fact in these templates,
  so a model trained on it scores above chance (25%).
- facts-generation: the same prompts, the object as the answer (EM/F1), greedy.
- facts-lm-en / facts-lm-zh: held-out documents of the quickstart corpus, perplexity (English)
  and bits per byte.

The files are a pure function of the fact tables and SEED; tests check that the committed
folder is what this writes.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from ..cli import run
from ..data import facts
from ..data.corpus import generate_corpus
from ..files import atomic_write_text

SEED = 1234
CHOICE_EXAMPLES = 40   # per template file
GENERATION_EXAMPLES = 30
NUM_CHOICES = 4
TEMPLATES = 3          # every relation has at least three per language
LM_CHARACTERS = 3000   # per language

YAMLS = {
    "facts-choice.yaml": """\
# Facts from the quickstart's tables as multiple choice: four objects of one relation, one
# file per prompt template (groups: en, zh). Chance is 25%. [gMASK]: the choices continue the
# prompt, as most of pretraining ([gMASK] samples) continues text.
name: "facts-choice"
type: "mul"
path: "data/facts-choice"
file-pattern:
  en: "en/*.jsonl"
  zh: "zh/*.jsonl"
max-seq-length: 256
use-task-mask: true
micro-batch-size: 16
""",
    "facts-generation.yaml": """\
# The same facts as generation: the prompt, then the object (EM/F1), greedy decoding.
name: "facts-generation"
type: "gen"
path: "data/facts-generation"
file-pattern:
  en: "en/*.jsonl"
  zh: "zh/*.jsonl"
max-seq-length: 256
max-gen-length: 8
micro-batch-size: 16
""",
    "facts-lm-en.yaml": """\
# Held-out English quickstart documents: word-level perplexity and bits per byte, windows of
# 255 tokens moving on by 64.
name: "facts-lm-en"
type: "lm"
path: "data/facts-lm/en"
file-pattern: "*.txt"
metrics: ["PPL", "BPB"]
max-seq-length: 256
generation-length: 64
use-task-mask: true
micro-batch-size: 4
""",
    "facts-lm-zh.yaml": """\
# Held-out Chinese quickstart documents: bits per byte (word-level perplexity counts words
# between spaces, which Chinese text does not have).
name: "facts-lm-zh"
type: "lm"
path: "data/facts-lm/zh"
file-pattern: "*.txt"
metrics: ["BPB"]
max-seq-length: 256
generation-length: 64
use-task-mask: true
micro-batch-size: 4
""",
}


def _jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def _facts(rng: random.Random, count: int):
    """`count` (relation, row) pairs, relations drawn uniformly."""
    relations = facts.relations()
    for _ in range(count):
        relation = rng.choice(relations)
        yield relation, rng.choice(relation.rows)


def choice_file(language: str, template: int, rng: random.Random) -> str:
    items = []
    for relation, row in _facts(rng, CHOICE_EXAMPLES):
        prompt, answer = facts.render(relation, row, language, template)
        others = [o for o in facts.objects(relation, language) if o != answer]
        choices = rng.sample(others, NUM_CHOICES - 1) + [answer]
        rng.shuffle(choices)
        items.append({"inputs_pretokenized": prompt.rstrip(), "choices_pretokenized": choices,
                      "label": choices.index(answer)})
    return _jsonl(items)


def generation_file(language: str, rng: random.Random) -> str:
    items = []
    for relation, row in _facts(rng, GENERATION_EXAMPLES):
        prompt, answer = facts.render(relation, row, language, 0)
        items.append({"inputs_pretokenized": prompt.rstrip(), "targets_pretokenized": [answer]})
    return _jsonl(items)


def lm_file(language: str) -> str:
    """Documents of one language from a corpus seed the quickstart does not train on."""
    texts, size = [], 0
    for text in generate_corpus(400, SEED + 1):
        english = text.isascii()
        chinese = not any(c.isascii() and c.isalpha() for c in text)
        if (english if language == "en" else chinese) and size < LM_CHARACTERS:
            texts.append(text)
            size += len(text)
    return (" " if language == "en" else "").join(texts) + "\n"


def sample_files() -> dict[str, str]:
    """Relative path -> contents of everything in tasks/sample."""
    rng = random.Random(SEED)
    files = dict(YAMLS)
    for language in facts.LANGUAGES:
        for t in range(TEMPLATES):
            path = f"data/facts-choice/{language}/template-{t}.jsonl"
            files[path] = choice_file(language, t, rng)
        files[f"data/facts-generation/{language}/test.jsonl"] = generation_file(language, rng)
        files[f"data/facts-lm/{language}/test.txt"] = lm_file(language)
    return files


def write_sample_tasks(folder: str | os.PathLike) -> list[Path]:
    written = []
    for relative, text in sample_files().items():
        path = Path(folder) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="tasks/sample")
    args = parser.parse_args(argv)
    for path in write_sample_tasks(args.output):
        print(path)
    return 0


if __name__ == "__main__":
    run(main)
