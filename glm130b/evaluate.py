"""Zero-shot evaluation on YAML-described tasks (reference §7).

    python -m glm130b.evaluate $MODEL_ARGS --data-path /data/eval --task tasks/lambada tasks/mmlu
    torchrun --nproc_per_node 8 -m glm130b.evaluate $MODEL_ARGS --model-parallel-size 8 ...

Folders given to --task are searched recursively for *.yaml. With more processes than
--model-parallel-size, the model replicas share each file's examples (data parallelism).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional

from .checkpoint import read_latest
from .cli import config_from_args, model_config, run
from .config import GLMConfig
from .evaluation import evaluate_tasks, load_tasks
from .evaluation.report import RunInfo
from .evaluation.runner import check_data, echo, is_rank0
from .initialize import RuntimeConfig, add_initialization_args, initialize_model_and_tokenizer
from .parallel import get_data_parallel_world_size


def add_evaluation_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("evaluation")
    g.add_argument("--task", nargs="+", required=True,
                   help="task YAML files, or folders searched recursively for *.yaml")
    g.add_argument("--data-path", default=None,
                   help="folder that the tasks' `path` fields are relative to (default: the "
                        "folder of each YAML file, as for tasks/sample)")
    g.add_argument("--output-path", default="evaluation-results",
                   help="folder for results-<time>.json: all numbers and every prediction")
    g.add_argument("--trust-task-code", action="store_true",
                   help="let a task YAML's `module:` import any module on sys.path (it runs "
                        "that module's code); without it only glm130b's task classes and "
                        "tasks/<name>.py beside the YAML are allowed")
    g.add_argument("--allow-missing", action="store_true",
                   help="skip tasks whose data folder does not exist (listed in the results) "
                        "instead of stopping before the model loads")
    g.add_argument("--limit", type=positive, default=None, metavar="N",
                   help="only the first N examples of each data file (documents, for the "
                        "Pile): for trying a setup, the numbers are not the task's")
    # Accepted so that the reference's command lines run unchanged.
    g.add_argument("--mode", choices=("inference",), default="inference", help=argparse.SUPPRESS)
    return parser


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def git_commit() -> Optional[str]:
    """HEAD of the checkout the package runs from; None for an installed copy or no git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def run_info(args: argparse.Namespace, config: GLMConfig, runtime: RuntimeConfig) -> RunInfo:
    # The package is imported before any of its modules; reading its version from
    # sys.modules keeps the rule that no module imports the package's __init__.
    version = getattr(sys.modules[__package__], "__version__", None)
    return RunInfo(model=config, checkpoint=runtime.load,
                   iteration=read_latest(runtime.load) if runtime.load else None,
                   tokenizer_type=args.tokenizer_type, tokenizer_model=args.tokenizer_model,
                   seed=runtime.seed, version=version, commit=git_commit())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_initialization_args(parser)
    add_evaluation_args(parser)
    args = parser.parse_args(argv)
    # every config checked before the model is built, and before any task code is imported
    tasks = load_tasks(args.task, trust_task_code=args.trust_task_code)
    check_data(tasks, args.data_path, args.allow_missing)
    runtime, config = config_from_args(RuntimeConfig, args), model_config(args)
    model, tokenizer = initialize_model_and_tokenizer(config, runtime,
                                                      args.tokenizer_type, args.tokenizer_model)
    if not runtime.load and is_rank0():
        print("warning: no --load, evaluating randomly initialised weights", file=sys.stderr)
    echo(f"> {len(tasks)} task(s): {', '.join(t.config.name for t in tasks)}; "
         f"{get_data_parallel_world_size()} model replica(s) of {runtime.model_parallel_size} "
         "tensor-parallel rank(s)")
    evaluate_tasks(model, tokenizer, tasks, args.data_path, args.output_path,
                   limit=args.limit, allow_missing=args.allow_missing,
                   run_info=run_info(args, config, runtime))
    return 0


if __name__ == "__main__":
    run(main)
