"""Task classes: multiple choice, generation, language modelling (reference §7).

A task reads each of its files into examples, predicts a micro-batch at a time, and scores a
file's predictions with the metrics its YAML names. Custom tasks (LAMBADA, the Pile, MMLU,
CrowS-Pairs, StereoSet) subclass these and change only what differs.
"""
from __future__ import annotations

import abc
import glob
import os
from pathlib import Path
from typing import Callable, Optional

from ..generation import BaseStrategy, BeamSearchStrategy, end_tokens, padding_slices
from . import metrics
from .configs import (BaseConfig, GenerationTaskConfig, LanguageModelTaskConfig,
                      MultiChoiceTaskConfig)
from .datasets import (FileData, build_generation_sample,
                       build_multiple_choice_sample, build_window, choice_example, document,
                       generation_example, num_windows, read_jsonl)
from .inference import choice_log_probs, generate_continuations, window_losses

Metric = Callable[["Task", list, FileData], "float | dict[str, float]"]


class Task(abc.ABC):
    config_class = BaseConfig
    task_type = "other"
    METRICS: dict[str, Metric] = {}
    overall_group: Optional[str] = None  # a group over all files, reported after the others

    def __init__(self, model, tokenizer, config: BaseConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.mask_id = tokenizer.get_command("[gMASK]" if config.use_task_mask else "[MASK]")
        self.sop_id = tokenizer.get_command("sop")

    def file_groups(self) -> dict[str, list[str]]:
        """Group name -> files (relative to the task's path) in sorted order."""
        pattern = self.config.file_pattern
        patterns = {"all": pattern} if isinstance(pattern, str) else pattern
        root = self.config.path
        groups = {}
        for name, glob_pattern in patterns.items():
            found = sorted(glob.glob(os.path.join(root, glob_pattern), recursive=True))
            groups[name] = [os.path.relpath(f, root) for f in found if os.path.isfile(f)]
        return groups

    @abc.abstractmethod
    def read(self, path: str) -> FileData:
        """A file's examples; bad lines are set aside in `skipped`."""

    @abc.abstractmethod
    def predict(self, batch: list, data: FileData) -> list:
        """One prediction per example of the micro-batch."""

    def record(self, prediction, example) -> dict:
        """One example's prediction as the results file keeps it."""
        return {"prediction": prediction}

    def score(self, predictions: list, data: FileData) -> dict[str, float]:
        """Metric name -> value; a metric with a value per category (a bias type, a Pile
        subset) gives one entry per category, `Name[category]`."""
        scores = {}
        for name in self.config.metrics:
            value = self.METRICS[name](self, predictions, data)
            if isinstance(value, dict):
                scores.update({f"{name}[{k}]": v for k, v in value.items()})
            else:
                scores[name] = value
        return scores


# ---- multiple choice ------------------------------------------------------------------------

def argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)


def _label_metric(fn) -> Metric:
    return lambda task, predictions, data: fn([task.choose(s, e) for s, e in
                                               zip(predictions, data.examples)],
                                              [e.label for e in data.examples])


class MultiChoiceTask(Task):
    """All choices packed behind one shared context (reference §2.3); the prediction is the
    choice with the largest summed log-probability."""
    config_class = MultiChoiceTaskConfig
    task_type = "mul"
    METRICS = {"Accuracy": _label_metric(metrics.accuracy),
               "Precision": _label_metric(metrics.micro_precision),
               "Recall": _label_metric(metrics.micro_recall),
               "F1_mul": _label_metric(metrics.micro_f1)}

    def read(self, path: str) -> FileData:
        def build(item):
            example = choice_example(item, self.tokenizer, self.config.max_seq_length)
            self.check(item, example)
            return example
        data = read_jsonl(path, build)
        data.single_token = bool(data.examples) and all(
            len(c) == 1 for e in data.examples for c in e.choices)
        return data

    def check(self, item: dict, example) -> None:
        """Custom tasks check the fields they add here (raising DataError)."""

    def predict(self, batch: list, data: FileData) -> list[list[float]]:
        c = self.config
        samples = [build_multiple_choice_sample(e.text, e.choices, data.single_token,
                                                self.mask_id, self.sop_id, c.use_task_mask,
                                                c.use_multitask_encoding) for e in batch]
        return choice_log_probs(self.model, samples)

    def choose(self, scores: list[float], example) -> int:
        return argmax(scores)

    def record(self, scores, example) -> dict:
        return {"scores": scores, "prediction": self.choose(scores, example),
                "label": example.label}


# ---- generation -----------------------------------------------------------------------------

def _answer_metric(score) -> Metric:
    def metric(task, predictions, data):
        return metrics.best_over_answers(score, [task.tokenizer.decode(p) for p in predictions],
                                         [[task.tokenizer.decode(t) for t in e.targets]
                                          for e in data.examples])
    return metric


class GenerationTask(Task):
    """Greedy decoding, or deterministic beam search with the config's settings; the answer
    is compared with every acceptable target as text (reference §2.2, §7.4)."""
    config_class = GenerationTaskConfig
    task_type = "gen"
    METRICS = {"EM": _answer_metric(metrics.exact_match), "F1": _answer_metric(metrics.token_f1)}

    def __init__(self, model, tokenizer, config: GenerationTaskConfig):
        super().__init__(model, tokenizer, config)
        self.end_tokens = end_tokens(tokenizer)
        vocab = getattr(getattr(model, "config", None), "vocab_size", 0)
        self.strategy = self.build_strategy(padding_slices(tokenizer, vocab))

    def build_strategy(self, invalid_slices: list):
        c = self.config
        if c.sampling_strategy == "BaseStrategy":
            return BaseStrategy(invalid_slices, temperature=1.0, top_k=1,
                                end_tokens=self.end_tokens)
        return BeamSearchStrategy(c.num_beams, length_penalty=c.length_penalty, consider_end=True,
                                  end_tokens=self.end_tokens, invalid_slices=invalid_slices,
                                  no_repeat_ngram_size=c.no_repeat_ngram_size,
                                  min_gen_length=c.min_gen_length, deterministic=True)

    def read(self, path: str) -> FileData:
        c = self.config

        def build(item):
            example = generation_example(item, self.tokenizer, c.max_seq_length, c.max_gen_length)
            self.sample(example)  # refuses what cannot be generated from, before any decoding
            return example
        return read_jsonl(path, build)

    def sample(self, example):
        return build_generation_sample(example.text, self.mask_id, self.sop_id,
                                       self.config.use_task_mask, self.config.unidirectional)

    def predict(self, batch: list, data: FileData) -> list[list[int]]:
        contexts, mask_positions = zip(*(self.sample(e) for e in batch))
        outputs = generate_continuations(self.model, list(contexts), list(mask_positions),
                                         self.strategy,
                           self.config.max_gen_length, self.config.unidirectional)
        return [self.choose(beams) for beams in outputs]

    def choose(self, beams: list[list[int]]) -> list[int]:
        """The answer among the returned sequences, best first."""
        return beams[0]

    def record(self, prediction, example) -> dict:
        return {"prediction": self.tokenizer.decode(prediction),
                "targets": [self.tokenizer.decode(t) for t in example.targets]}


# ---- language modelling ---------------------------------------------------------------------

def _total_loss(predictions: list) -> float:
    return float(sum(predictions))


class LanguageModelTask(Task):
    """A plain text file read as one document and scored in overlapping windows (reference
    §2.5); perplexity per word of the raw text, or bits per UTF-8 byte."""
    config_class = LanguageModelTaskConfig
    task_type = "lm"
    METRICS = {
        "PPL": lambda task, predictions, data: metrics.perplexity(
            _total_loss(predictions), sum(d.num_words for d in data.documents)),
        "BPB": lambda task, predictions, data: metrics.bits_per_byte(
            _total_loss(predictions), sum(d.num_bytes for d in data.documents)),
    }

    def read(self, path: str) -> FileData:
        text = Path(path).read_text(encoding="utf-8")
        return self.windowed(FileData(path, []), [document(text, self.tokenizer.tokenize(text))])

    def windowed(self, data: FileData, documents: list) -> FileData:
        """The examples of a file of documents: one per (document, window); an empty document
        has nothing to score."""
        c = self.config
        for doc in documents:
            if not doc.tokens:
                data.skipped.append(f"{data.path}: an empty document")
        data.documents = [doc for doc in documents if doc.tokens]
        data.examples = [(d, w) for d, doc in enumerate(data.documents)
                         for w in range(num_windows(len(doc.tokens), c.max_seq_length,
                                                    c.generation_length))]
        return data

    def predict(self, batch: list, data: FileData) -> list[float]:
        c = self.config
        windows = [build_window(data.documents[d].tokens, w, c.max_seq_length,
                                c.generation_length, self.mask_id, self.sop_id, c.unidirectional)
                   for d, w in batch]
        return window_losses(self.model, windows)

    def record(self, loss, example) -> dict:
        return {"document": example[0], "window": example[1], "loss": loss}

