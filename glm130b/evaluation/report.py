"""The reference's report (§7.5), the summary table and the results file.

Per file: `Finish <file>, Accuracy = x.xxx`. Per group (a key of `file-pattern`; files are
usually different prompts of one task): for each metric the max, the median and the
sample-weighted average over the group's files. The summary gives each group's average, with
the standard error of the mean for accuracy metrics as lm-evaluation-harness computes it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from ..config import GLMConfig
from ..files import atomic_write_text


@dataclass
class RunInfo:
    """What produced the numbers, for the results file: filled in by the entry point, which
    knows the command line; the library alone knows only its own arguments."""
    model: Optional[GLMConfig] = None
    checkpoint: Optional[str] = None
    iteration: Optional[str] = None  # what the checkpoint's `latest` names
    tokenizer_type: Optional[str] = None
    tokenizer_model: Optional[str] = None
    seed: Optional[int] = None
    version: Optional[str] = None
    commit: Optional[str] = None  # None outside a git checkout

    def as_json(self) -> dict:
        return {"model": dataclasses.asdict(self.model) if self.model else None,
                "checkpoint": {"folder": self.checkpoint, "iteration": self.iteration},
                "tokenizer": {"type": self.tokenizer_type, "model": self.tokenizer_model},
                "seed": self.seed, "version": self.version, "commit": self.commit}


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


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


def group_stderr(files: list[tuple[dict[str, int], int]]) -> dict[str, float]:
    """(right answers per accuracy metric, number of examples) per file -> metric -> standard
    error of the mean of the pooled 0/1 correctness, sqrt(p(1-p)/(n-1)), in percent like the
    metric. A file counts only for the metrics it has a count for."""
    right, total = defaultdict(int), defaultdict(int)
    for counts, n in files:
        for name, k in counts.items():
            right[name] += k
            total[name] += n
    return {name: 100.0 * math.sqrt(right[name] / n * (1 - right[name] / n) / (n - 1))
            for name, n in total.items() if n > 1}


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


def summary_rows(results: list[dict]) -> list[dict]:
    """Per task, group (the overall one last) and metric: the sample-weighted average over the
    group's files, and its standard error where there is one."""
    rows = []
    for result in results:
        groups = [(g, e["stats"], e["stderr"]) for g, e in result["groups"].items()]
        if result.get("overall"):
            groups.append((result["overall_group"], result["overall"], result["overall_stderr"]))
        rows += [{"task": result["name"], "group": group, "metric": metric,
                  "value": s["average"], "stderr": stderr.get(metric)}
                 for group, stats, stderr in groups for metric, s in stats.items()]
    return rows


def summary_lines(rows: list[dict]) -> list[str]:
    """A Markdown table, as lm-evaluation-harness prints one."""
    table = [("Task", "Group", "Metric", "Value", "", "Stderr")] + [
        (r["task"], r["group"], r["metric"], f"{r['value']:.3f}",
         "" if r["stderr"] is None else "±",
         "" if r["stderr"] is None else f"{r['stderr']:.3f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(6)]
    lines = ["|" + "|".join(f" {c:<{w}} " if i < 3 else f" {c:>{w}} "
                            for i, (c, w) in enumerate(zip(row, widths))) + "|" for row in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines
