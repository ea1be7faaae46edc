"""The reference's metrics (reference §7.4), as plain functions of predictions and answers.

Percentages are on a 0-100 scale as the reference prints them. Which names a YAML file may
ask for is up to its task class (`Task.METRICS`); the loader refuses any other name.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Callable, Sequence

_PUNCTUATION = set(string.punctuation)


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    correct = sum(p == label for p, label in zip(predictions, labels, strict=True))
    return 100.0 * correct / max(len(predictions), 1)


def _micro_counts(predictions: Sequence, labels: Sequence):
    """Summed over the labels: true positives, false positives, false negatives. A wrong
    prediction is a false positive of the predicted label and a false negative of the true one."""
    tp = sum(p == label for p, label in zip(predictions, labels, strict=True))
    wrong = len(predictions) - tp
    return tp, wrong, wrong


def micro_precision(predictions: Sequence, labels: Sequence) -> float:
    tp, fp, _ = _micro_counts(predictions, labels)
    return 100.0 * tp / (tp + fp) if tp + fp else 0.0


def micro_recall(predictions: Sequence, labels: Sequence) -> float:
    tp, _, fn = _micro_counts(predictions, labels)
    return 100.0 * tp / (tp + fn) if tp + fn else 0.0


def micro_f1(predictions: Sequence, labels: Sequence) -> float:
    p, r = micro_precision(predictions, labels), micro_recall(predictions, labels)
    return 2 * p * r / (p + r) if p + r else 0.0


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_over_answers(score: Callable[[str, str], float], predictions: Sequence[str],
                      answers: Sequence[Sequence[str]]) -> float:
    """Mean over examples of the best score against any acceptable answer, x100 (an example
    without answers scores 0)."""
    total = sum(max((score(p, a) for a in truths), default=0.0)
                for p, truths in zip(predictions, answers, strict=True))
    return 100.0 * total / max(len(predictions), 1)


def perplexity(total_loss: float, num_words: int) -> float:
    """Word-level perplexity: token losses summed, divided by the words of the raw text; the
    exponent is capped at 20 as the reference does."""
    return math.exp(min(20.0, total_loss / num_words))


def bits_per_byte(total_loss: float, num_bytes: int) -> float:
    return total_loss / num_bytes / math.log(2)
