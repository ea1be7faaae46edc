"""Synthetic bilingual corpus built from the fact tables, for the quickstart.

    python -m glm130b.data.corpus --output corpus.jsonl --num-documents 20000 --seed 1234
"""

import argparse
import itertools
import json
import math
import os
import random
import sys
import time
from typing import Iterator

from glm130b.data import facts
from glm130b.files import atomic_open

MIN_SENTENCES, MAX_SENTENCES = 3, 12
# Share of English-only, Chinese-only and mixed documents.
DOCUMENT_KINDS = (("en", 0.4), ("zh", 0.4), ("mixed", 0.2))
# In mixed documents, how often a fact is followed by its translation: these pairs are
# what ties "France" to "法国" for a model that never sees a dictionary.
TRANSLATION_PROBABILITY = 0.35
MAX_RELATION_WEIGHT = 11.0


def _sentence_table():
    """Every corpus sentence, pre-rendered: {language: [relation][row] -> tuple of sentences}.

    Rendering once up front keeps generation to a few random choices per sentence.
    """
    table = {}
    for language in facts.LANGUAGES:
        table[language] = [
            [tuple(facts.sentence(rel, row, language, t)
                   for t in range(len(rel.templates(language))))
             for row in rel.rows]
            for rel in facts.relations()
        ]
    return table


def _relation_weights():
    # sqrt of the table size: big tables get more sentences, yet the small ones (weekdays,
    # months) are not drowned; the cap keeps the 365-row date tables from filling the corpus.
    return [min(math.sqrt(len(rel.rows)), MAX_RELATION_WEIGHT) for rel in facts.relations()]


def _join(sentences, languages):
    # Chinese runs on without spaces; a space separates anything next to English.
    parts = [sentences[0]]
    for i in range(1, len(sentences)):
        if not (languages[i] == "zh" and languages[i - 1] == "zh"):
            parts.append(" ")
        parts.append(sentences[i])
    return "".join(parts)


def generate_corpus(num_documents: int, seed: int) -> Iterator[str]:
    """Yield num_documents documents; the same seed always gives the same documents."""
    if num_documents < 0:
        raise ValueError(f"num_documents must be >= 0, got {num_documents}")
    rng = random.Random(seed)
    table = _sentence_table()
    relation_ids = range(len(facts.relations()))
    cumulative_weights = list(itertools.accumulate(_relation_weights()))
    kinds = [k for k, _ in DOCUMENT_KINDS]
    kind_weights = [w for _, w in DOCUMENT_KINDS]
    choice, choices, randint, rand = rng.choice, rng.choices, rng.randint, rng.random

    for _ in range(num_documents):
        kind = choices(kinds, kind_weights)[0]
        count = randint(MIN_SENTENCES, MAX_SENTENCES)
        picks = choices(relation_ids, cum_weights=cumulative_weights, k=count)
        sentences, languages = [], []
        for relation_id in picks:
            language = kind if kind != "mixed" else choice(facts.LANGUAGES)
            rows = table[language][relation_id]
            row_id = randint(0, len(rows) - 1)
            sentences.append(choice(rows[row_id]))
            languages.append(language)
            if kind == "mixed" and rand() < TRANSLATION_PROBABILITY:
                other = "zh" if language == "en" else "en"
                sentences.append(choice(table[other][relation_id][row_id]))
                languages.append(other)
        yield _join(sentences, languages)


def write_corpus(path: str, num_documents: int, seed: int, fmt: str = "jsonl"):
    """Write the corpus to path atomically; returns (documents, characters, bytes)."""
    documents = characters = 0
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        for text in generate_corpus(num_documents, seed):
            if fmt == "jsonl":
                f.write(json.dumps({"text": text}, ensure_ascii=False))
            else:
                f.write(text)
            f.write("\n")
            documents += 1
            characters += len(text)
    return documents, characters, os.path.getsize(path)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m glm130b.data.corpus",
        description="Generate the quickstart's bilingual fact corpus.")
    parser.add_argument("--output", required=True, help="file to write (jsonl or txt)")
    parser.add_argument("--num-documents", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--format", choices=("jsonl", "txt"), default="jsonl",
                        help="jsonl: one {\"text\": ...} per line; txt: one document per line")
    args = parser.parse_args(argv)
    if args.num_documents < 0:
        parser.error("--num-documents must be >= 0")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    directory = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(args.output):
        print(f"error: --output is a directory, expected a file path: {args.output}",
              file=sys.stderr)
        return 2
    if not os.path.isdir(directory):
        print(f"error: output directory does not exist: {directory}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        documents, characters, size = write_corpus(
            args.output, args.num_documents, args.seed, args.format)
    except OSError as e:
        print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(f"wrote {args.output}: documents={documents} characters={characters} "
          f"bytes={size} seconds={seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
