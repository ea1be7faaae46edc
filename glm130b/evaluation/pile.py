"""The Pile: bits per UTF-8 byte, per subset (reference §7.4).

A jsonl file of documents, each with `text` (token ids, or `text_pretokenized` to tokenize),
`text_pretokenized` (whose bytes are counted) and `meta.pile_set_name`; windows as for any
language-model task (the reference's pile.yaml: 1024 tokens of context, 1024 scored).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import List

from .configs import LanguageModelTaskConfig
from ..errors import DataError
from .datasets import FileData, document, field_of, read_jsonl, tokenized
from .metrics import bits_per_byte
from .tasks import LanguageModelTask


def bpb_per_subset(task, predictions, data: FileData) -> dict[str, float]:
    loss, size = defaultdict(float), defaultdict(int)
    for doc in data.documents:
        size[doc.meta["pile_set_name"]] += doc.num_bytes
    for (d, _), window_loss in zip(data.examples, predictions):
        loss[data.documents[d].meta["pile_set_name"]] += window_loss
    return {name: bits_per_byte(loss[name], size[name]) for name in loss}


@dataclass
class PileConfig(LanguageModelTaskConfig):
    metrics: List[str] = field(default_factory=lambda: ["BPB"])


class Pile(LanguageModelTask):
    config_class = PileConfig
    METRICS = {"BPB": bpb_per_subset}

    def read(self, path: str) -> FileData:
        def build(item):
            text = field_of(item, "text_pretokenized", str)
            meta = field_of(item, "meta", dict)
            if not isinstance(meta.get("pile_set_name"), str):
                raise DataError("missing field 'meta.pile_set_name'")
            return document(text, tokenized(item, "text", self.tokenizer), meta)
        data = read_jsonl(path, build)
        for doc, line in zip(data.examples, data.lines):
            doc.line = line
        return self.windowed(data, data.examples)
