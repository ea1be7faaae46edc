"""Running tasks: find the YAML files, evaluate each task file by file with the examples split
over the data-parallel ranks, print the report and keep the results (reference §7.1, §7.5,
§7.7).

Every rank of a model replica (its tensor-parallel group) takes the same examples; replicas
take every dp-th example, and the predictions are gathered back into file order on every rank.
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
from .datasets import FileData
from .report import file_line, group_lines, group_stats, results_file, write_json
from .tasks import Task


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


def evaluate_file(task: Task, relative: str) -> Optional[dict]:
    path = os.path.join(task.config.path, relative)
    try:
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
            "predictions": [task.record(p, e) for p, e in zip(predictions, data.examples)]}


def evaluate_task(task: Task) -> dict:
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
        done = {name: evaluate_file(task, name) for name in names}
        result["groups"][group] = {"files": {k: v for k, v in done.items() if v is not None}}
    report(task, result)
    result["seconds"] = time.perf_counter() - start
    echo(f"Finish task {config.name} in {result['seconds']:.1f}s.")
    return result


def report(task: Task, result: dict) -> None:
    """Per group (and the task's overall group) the max / median / average of each metric
    over the files; the statistics go into `result` too."""
    echo(f"Evaluation results of task {task.config.name}:")
    everything = []
    for group, entry in result["groups"].items():
        per_file = [(f["metrics"], f["examples"]) for f in entry["files"].values()]
        everything += per_file
        entry["stats"] = group_stats(per_file)
        if entry["stats"]:
            for line in group_lines(group, entry["stats"]):
                echo("    " + line)
    if task.overall_group and everything:
        result["overall"] = group_stats(everything)
        for line in group_lines(task.overall_group, result["overall"]):
            echo(line)
    skipped = sum(len(f["skipped"]) for g in result["groups"].values()
                  for f in g["files"].values())
    if skipped:
        echo(f"    {skipped} example(s) skipped (listed above)")
    result["skipped"] = skipped


def evaluate_tasks(model, tokenizer, tasks: Sequence[Union[LoadedTask, str, os.PathLike]],
                   data_path: Optional[str] = None, output_path: Optional[str] = None,
                   trust_task_code: bool = False) -> list[dict]:
    """Evaluate the tasks in order: as `load_tasks` gives them, or task files and folders,
    loaded here as `load_tasks(tasks, trust_task_code)` loads them. A task's `path` is read
    under `data_path`, or, without one, beside its YAML file. With `output_path`, rank 0
    writes every result and every prediction to a new results-<time>.json there, rewritten
    after each task."""
    if not all(isinstance(t, LoadedTask) for t in tasks):
        if any(isinstance(t, LoadedTask) for t in tasks):
            raise TypeError("evaluate_tasks takes loaded tasks or task files, not both")
        tasks = load_tasks([os.fspath(t) for t in tasks], trust_task_code)
    results, start = [], time.perf_counter()
    target = results_file(output_path) if output_path and is_rank0() else None
    for loaded in tasks:
        root = data_path if data_path is not None else os.path.dirname(loaded.yaml)
        config = dataclasses.replace(loaded.config, path=os.path.join(root, loaded.config.path))
        result = evaluate_task(loaded.cls(model, tokenizer, config))
        results.append(dict(result, yaml=loaded.yaml))
        if target is not None:
            write_json(target, {"tasks": results})
    n = len(tasks)
    echo(f"\nFinish {n} task{'s' if n != 1 else ''} in {time.perf_counter() - start:.1f}s")
    if target is not None:
        echo(f"results written to {target}")
    return results
