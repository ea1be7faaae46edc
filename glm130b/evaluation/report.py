"""The reference's report (§7.5) and the results file.

Per file: `Finish <file>, Accuracy = x.xxx`. Per group (a key of `file-pattern`; files are
usually different prompts of one task): for each metric the max, the median and the
sample-weighted average over the group's files.
"""
from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from ..files import atomic_write_text


def group_stats(files: list[tuple[dict[str, float], int]]) -> dict[str, dict[str, float]]:
    """(scores, number of examples) per file -> metric -> max / median / average. A file
    without examples has no say; a metric missing from a file (a Pile subset it lacks) is
    taken over the files that have it."""
    values, weights = defaultdict(list), defaultdict(list)
    for scores, n in files:
        if n:
            for name, value in scores.items():
                values[name].append(value)
                weights[name].append(n)
    return {name: {"max": max(v), "median": statistics.median(v),
                   "average": sum(x * w for x, w in zip(v, weights[name])) / sum(weights[name])}
            for name, v in values.items()}


def file_line(name: str, scores: dict[str, float]) -> str:
    return f"Finish {name}" + "".join(f", {k} = {v:.3f}" for k, v in scores.items())


def _stats(stats: dict[str, float]) -> str:
    return (f"max = {stats['max']:.3f}, median = {stats['median']:.3f}, "
            f"average = {stats['average']:.3f}")


def group_lines(group: str, stats: dict[str, dict[str, float]]) -> list[str]:
    if len(stats) == 1:
        [(name, s)] = stats.items()
        return [f"Group {group} {name}: {_stats(s)}"]
    return [f"Group {group}:"] + [f"    Metric {name}: {_stats(s)}" for name, s in stats.items()]


def results_file(folder: str | os.PathLike) -> Path:
    """A new `results-<date>-<time>.json` in `folder` (a number added if the name is taken)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"results-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = folder / f"{stem}.json", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.json", n + 1
    return path


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1))
