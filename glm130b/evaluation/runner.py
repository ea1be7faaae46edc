"""Running tasks: find the YAML files, evaluate each task file by file with the examples split
over the data-parallel ranks, print the report and keep the results (reference §7.1, §7.5,
§7.7).

Every rank of a model replica (its tensor-parallel group) takes the same examples; replicas
take every dp-th example, and the predictions are gathered back into file order on every rank.
A task without its data folder stops the run before anything is evaluated, unless missing
data is allowed; then it is skipped and listed.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch.distributed as dist
from tqdm import tqdm

from ..errors import UsageError
from ..parallel import (get_data_parallel_group, get_data_parallel_rank,
                        get_data_parallel_world_size, is_rank0)
from .configs import BaseConfig, check_task_config, finish_task_config
from .datasets import FileData, examples_limit, model_input, source_line
from .report import (RunInfo, file_line, group_lines, group_stats, group_stderr, now,
                     results_file, summary_lines, summary_rows, write_json)
from .tasks import Task

# Metrics that are the mean of a per-example 0/1 correctness, so have a binomial stderr.
ACCURACY_METRICS = ("Accuracy", "EM")


def echo(line: str = "") -> None:
    if is_rank0():
        tqdm.write(line, file=sys.stdout)


def find_task_files(paths: list[str]) -> list[str]:
    """YAML files as given, and every *.yaml below the given folders."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found += sorted(glob.glob(os.path.join(path, "**", "*.yaml"), recursive=True))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise UsageError(f"--task {path}: no such file or folder")
    if not found:
        raise UsageError(f"no task YAML files in {' '.join(paths)}")
    return found


@dataclass
class LoadedTask:
    yaml: str
    cls: type
    config: BaseConfig


def load_tasks(paths: list[str], trust_task_code: bool = False) -> list[LoadedTask]:
    """Every task config, checked, before any model is loaded; every file as far as it can be
    before any task code is imported (see configs: which `module:` needs trust_task_code)."""
    checked = [check_task_config(p, trust_task_code) for p in find_task_files(paths)]
    return [LoadedTask(c.path, *finish_task_config(c)) for c in checked]


def task_config(loaded: LoadedTask, data_path: Optional[str]) -> BaseConfig:
    """The task's config with `path` under `data_path`, or, without one, beside its YAML."""
    root = data_path if data_path is not None else os.path.dirname(loaded.yaml)
    return dataclasses.replace(loaded.config, path=os.path.join(root, loaded.config.path))


def check_data(tasks: Sequence[LoadedTask], data_path: Optional[str],
               allow_missing: bool = False) -> list[dict]:
    """The tasks whose data folder does not exist, as the results file lists them; unless
    `allow_missing`, any is an error naming the first, so a mistyped path fails at once."""
    folders = [(t, task_config(t, data_path).path) for t in tasks]
    missing = [{"task": t.config.name, "yaml": t.yaml, "path": path}
               for t, path in folders if not os.path.isdir(path)]
    if missing and not allow_missing:
        first, more = missing[0], len(missing) - 1
        others = f" ({more} other task(s) lack theirs too)" if more else ""
        raise UsageError(f"{first['yaml']}: the data folder {first['path']} does not "
                         f"exist{others}; check --data-path, or pass --allow-missing to skip "
                         "tasks without data")
    return missing


def predict_all(task: Task, data: FileData, bar: tqdm) -> list:
    """The file's predictions in file order; this replica predicts every dp-th example."""
    dp, rank = get_data_parallel_world_size(), get_data_parallel_rank()
    mine, size = data.examples[rank::dp], task.config.micro_batch_size
    predictions = []
    for start in range(0, len(mine), size):
        batch = mine[start:start + size]
        predictions += task.predict(batch, data)
        bar.update(min(len(batch) * dp, bar.total - bar.n))
    if dp == 1:
        return predictions
    shards = [None] * dp
    dist.all_gather_object(shards, predictions, group=get_data_parallel_group())
    return [shards[i % dp][i // dp] for i in range(len(data.examples))]


def correct_counts(task: Task, predictions: list, data: FileData) -> dict[str, int]:
    """Per accuracy metric, how many examples were right: the metric of each example alone,
    which is 0 or 100 for a 0/1 correctness (a metric that is not gets no count)."""
    counts = {}
    for name in (m for m in task.config.metrics if m in ACCURACY_METRICS):
        values = [task.METRICS[name](task, [p], dataclasses.replace(data, examples=[e]))
                  for p, e in zip(predictions, data.examples)]
        if all(v in (0.0, 100.0) for v in values):
            counts[name] = sum(v == 100.0 for v in values)
    return counts


def records(task: Task, predictions: list, data: FileData) -> list[dict]:
    """Each prediction as the results file keeps it, with its input and where it came from."""
    kept = []
    for i, (prediction, example) in enumerate(zip(predictions, data.examples)):
        ids = model_input(example, data, task.config)
        kept.append(dict(task.record(prediction, example), line=source_line(i, example, data),
                         input=None if ids is None else {"ids": ids, "text": render(task, ids)}))
    return kept


def render(task: Task, ids: list[int]) -> Optional[str]:
    try:
        return task.tokenizer.decode(ids)
    except (ValueError, KeyError, IndexError):  # ids this tokenizer has no text for
        return None


def evaluate_file(task: Task, relative: str, limit: Optional[int] = None) -> Optional[dict]:
    path = os.path.join(task.config.path, relative)
    try:
        with examples_limit(limit):
            data = task.read(path)
    except (OSError, UnicodeDecodeError) as e:
        echo(f"        skipped {relative}: cannot read it: {e}")
        return None
    for problem in data.skipped:
        echo(f"        skipped {problem}")
    with tqdm(total=len(data.examples), desc=relative, unit="example", leave=False,
              disable=not is_rank0(), file=sys.stderr) as bar:
        predictions = predict_all(task, data, bar)
    scores = task.score(predictions, data) if data.examples else {}
    echo("        " + file_line(relative, scores))
    return {"metrics": scores, "examples": len(data.examples), "skipped": data.skipped,
            "correct": correct_counts(task, predictions, data),
            "predictions": records(task, predictions, data)}


def evaluate_task(task: Task, limit: Optional[int] = None) -> dict:
    """Evaluate every file of every group; print the report; return the results."""
    config, start = task.config, time.perf_counter()
    echo(f"\nEvaluating task {config.name}:")
    result = {"name": config.name, "config": dataclasses.asdict(config), "groups": {}}
    if os.path.isdir(config.path):
        files = task.file_groups()
    else:
        echo(f"    skipped: the data folder {config.path} does not exist")
        files = {}
    for group, names in files.items():
        echo(f"    Evaluating group {group}:")
        if not names:
            echo(f"        no files match {config.file_pattern!r} under {config.path}")
        done = {name: evaluate_file(task, name, limit) for name in names}
        result["groups"][group] = {"files": {k: v for k, v in done.items() if v is not None}}
    report(task, result)
    result["seconds"] = time.perf_counter() - start
    echo(f"Finish task {config.name} in {result['seconds']:.1f}s.")
    return result


def report(task: Task, result: dict) -> None:
    """Per group (and the task's overall group) the max / median / average of each metric
    over the files; the statistics go into `result` too."""
    echo(f"Evaluation results of task {task.config.name}:")
    all_files, all_counts = [], []
    for group, entry in result["groups"].items():
        files = entry["files"].values()
        per_file, counts = ([(f[key], f["examples"]) for f in files]
                            for key in ("metrics", "correct"))
        all_files, all_counts = all_files + per_file, all_counts + counts
        entry["stats"], entry["stderr"] = group_stats(per_file), group_stderr(counts)
        if entry["stats"]:
            for line in group_lines(group, entry["stats"]):
                echo("    " + line)
    if task.overall_group and all_files:
        result["overall"] = group_stats(all_files)
        result["overall_stderr"] = group_stderr(all_counts)
        result["overall_group"] = task.overall_group
        for line in group_lines(task.overall_group, result["overall"]):
            echo(line)
    skipped = sum(len(f["skipped"]) for g in result["groups"].values()
                  for f in g["files"].values())
    if skipped:
        echo(f"    {skipped} example(s) skipped (listed above)")
    result["skipped"] = skipped


def evaluate_tasks(model, tokenizer, tasks: Sequence[Union[LoadedTask, str, os.PathLike]],
                   data_path: Optional[str] = None, output_path: Optional[str] = None,
                   trust_task_code: bool = False, *, limit: Optional[int] = None,
                   allow_missing: bool = False, run_info: Optional[RunInfo] = None) -> list[dict]:
    """Evaluate the tasks in order: as `load_tasks` gives them, or task files and folders,
    loaded here as `load_tasks(tasks, trust_task_code)` loads them. A task's `path` is read
    under `data_path`, or, without one, beside its YAML file; a missing one is a UsageError
    unless `allow_missing`. `limit` takes each file's first examples (documents, for the
    Pile). With `output_path`, rank 0 writes every result and every prediction to a new
    results-<time>.json there, with `run_info`, rewritten after each task."""
    if not all(isinstance(t, LoadedTask) for t in tasks):
        if any(isinstance(t, LoadedTask) for t in tasks):
            raise TypeError("evaluate_tasks takes loaded tasks or task files, not both")
        tasks = load_tasks([os.fspath(t) for t in tasks], trust_task_code)
    missing = check_data(tasks, data_path, allow_missing)
    run = {**(run_info.as_json() if run_info else {}), "data_path": data_path, "limit": limit,
           "started": now(), "finished": None}
    results, start = [], time.perf_counter()
    target = results_file(output_path) if output_path and is_rank0() else None
    for loaded in tasks:
        task = loaded.cls(model, tokenizer, task_config(loaded, data_path))
        results.append(dict(evaluate_task(task, limit), yaml=loaded.yaml))
        if target is not None:
            write_json(target, results_json(run, results, missing))
    n = len(tasks)
    echo(f"\nFinish {n} task{'s' if n != 1 else ''} in {time.perf_counter() - start:.1f}s")
    if missing:
        echo(f"{len(missing)} task(s) skipped for want of data (--allow-missing)")
    summarize(results, limit)
    run["finished"] = now()
    if target is not None:
        write_json(target, results_json(run, results, missing))
        echo(f"results written to {target}")
    return results


def results_json(run: dict, results: list[dict], missing: list[dict]) -> dict:
    return {"run": run, "tasks": results, "missing": missing, "summary": summary_rows(results)}


def summarize(results: list[dict], limit: Optional[int]) -> None:
    rows = summary_rows(results)
    if rows:
        cut = f", only the first {limit} example(s) of each file" if limit else ""
        echo(f"\nSummary (each group's sample-weighted average{cut}):")
        for line in summary_lines(rows):
            echo(line)
