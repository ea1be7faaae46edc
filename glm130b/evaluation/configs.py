"""Task configs: the reference's YAML schema (reference §7.2), read strictly.

A YAML file names one task. Keys may be written snake_case or dash-case (`file-pattern`,
`micro-batch-size`). An unknown key, a value of the wrong type, a missing required field or a
metric the task does not compute is one line naming the file and the field, before any model
is loaded. `module:` picks the task class by dotted path (the reference's own paths, such as
`tasks.lambada.task.LAMBADA`, map to ours); without it the class follows `type:`.

Importing a module runs its code, so a file is read and checked in full before anything is
imported, and `module:` may name only the package's own task classes, or `tasks.<name>.<Class>`
with `tasks/<name>.py` beside the YAML (loaded from that file, never from sys.path). Any other
module needs `trust_task_code` (`--trust-task-code`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import yaml

from ..errors import ConfigError

TASK_TYPES = ("mul", "gen", "lm", "other")


@dataclass
class BaseConfig:
    name: str                      # task name
    type: str                      # mul | gen | lm | other
    path: str                      # data folder, relative to --data-path
    module: Optional[str] = None   # custom task class, "package.module.Class"
    metrics: List[str] = field(default_factory=list)
    use_task_mask: bool = False    # [gMASK] instead of [MASK]
    use_multitask_encoding: bool = False  # choice positions count on (multiple choice only)
    unidirectional: bool = False   # causal attention over the context (needs use_task_mask)
    max_seq_length: int = 2048
    # A glob under `path`, or {group name: glob}; a single glob is the group "all".
    file_pattern: Union[str, Dict[str, str]] = "**/*.json*"
    micro_batch_size: int = 1


@dataclass
class MultiChoiceTaskConfig(BaseConfig):
    metrics: List[str] = field(default_factory=lambda: ["Accuracy"])


@dataclass
class GenerationTaskConfig(BaseConfig):
    metrics: List[str] = field(default_factory=lambda: ["EM", "F1"])
    sampling_strategy: str = "BaseStrategy"  # greedy; or BeamSearchStrategy (deterministic)
    num_beams: int = 4
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 3
    min_gen_length: int = 0
    max_gen_length: int = 128


@dataclass
class LanguageModelTaskConfig(BaseConfig):
    metrics: List[str] = field(default_factory=lambda: ["PPL"])
    generation_length: int = 256  # tokens scored per window after the first


# The reference's task classes, by the paths its YAMLs give, and where ours live.
_OURS = "glm130b.evaluation"
REFERENCE_MODULES = {
    "evaluation.MultiChoiceTask": f"{_OURS}.tasks.MultiChoiceTask",
    "evaluation.GenerationTask": f"{_OURS}.tasks.GenerationTask",
    "evaluation.LanguageModelTask": f"{_OURS}.tasks.LanguageModelTask",
    "tasks.lambada.task.LAMBADA": f"{_OURS}.lambada.LAMBADA",
    "tasks.mmlu.task.MMLU": f"{_OURS}.mmlu.MMLU",
    "tasks.language-modeling.pile.Pile": f"{_OURS}.pile.Pile",
    "tasks.ethnic.crows-pair.tasks.CrowsPairTask": f"{_OURS}.ethnic.CrowsPairTask",
    "tasks.ethnic.CROWS_PAIR.tasks.CrowsPairTask": f"{_OURS}.ethnic.CrowsPairTask",
    "tasks.ethnic.stereoset.tasks.StereoSetTask": f"{_OURS}.ethnic.StereoSetTask",
    "tasks.ethnic.StereoSet.tasks.StereoSetTask": f"{_OURS}.ethnic.StereoSetTask",
    "tasks.ethnic.tasks.CrowsPairTask": f"{_OURS}.ethnic.CrowsPairTask",
    "tasks.ethnic.tasks.StereoSetTask": f"{_OURS}.ethnic.StereoSetTask",
}
DOTTED = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)+")
DEFAULT_CLASSES = {"mul": f"{_OURS}.tasks.MultiChoiceTask",
                   "gen": f"{_OURS}.tasks.GenerationTask",
                   "lm": f"{_OURS}.tasks.LanguageModelTask"}


def read_yaml(path: str | Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    return data


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (list, List):
        return f"a list of {_describe(args[0])}s"
    if origin in (dict, Dict):
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[hint]


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if origin in (list, List):
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin in (dict, Dict):
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1])
                                               for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def parse_config(cls, data: dict, path: str | Path):
    """`cls` (a config dataclass) from a YAML mapping, every field checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            known = ", ".join(n.replace("_", "-") for n in fields)
            raise ConfigError(f"{path}: unknown field '{key}' (known: {known})")
        if not _matches(value, hints[name]):
            raise ConfigError(f"{path}: field '{key}' must be {_describe(hints[name])}, "
                              f"got {value!r}")
        values[name] = value
    for name, f in fields.items():
        if name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required field '{name}'")
    config = cls(**values)
    _check_values(config, path)
    return config


def _check_values(config: BaseConfig, path) -> None:
    def bad(field_name: str, why: str):
        raise ConfigError(f"{path}: field '{field_name}' {why}")

    if config.type not in TASK_TYPES:
        bad("type", f"must be one of {', '.join(TASK_TYPES)}, got {config.type!r}")
    if config.unidirectional and not config.use_task_mask:
        bad("unidirectional", "needs use_task_mask: [MASK] doesn't support unidirectional "
                              "attention")
    if config.unidirectional and isinstance(config, MultiChoiceTaskConfig):
        bad("unidirectional", "is for generation and language-model tasks; multiple-choice "
                              "contexts are bidirectional")
    for name in ("max_seq_length", "micro_batch_size", "num_beams", "max_gen_length",
                 "generation_length"):
        if getattr(config, name, 1) < 1:
            bad(name, f"must be at least 1, got {getattr(config, name)}")
    if isinstance(config, GenerationTaskConfig):
        if config.sampling_strategy not in ("BaseStrategy", "BeamSearchStrategy"):
            bad("sampling_strategy", "must be BaseStrategy or BeamSearchStrategy, got "
                                     f"{config.sampling_strategy!r}")
        if config.max_gen_length + 2 >= config.max_seq_length:
            bad("max_gen_length", f"{config.max_gen_length} leaves no room for a context "
                                  f"in max_seq_length {config.max_seq_length}")
    if isinstance(config, LanguageModelTaskConfig) \
            and config.generation_length > config.max_seq_length - 1:
        bad("generation_length", f"{config.generation_length} exceeds max_seq_length - 1")


@dataclass(frozen=True)
class TaskSource:
    """Where a task class comes from, settled before anything is imported: a dotted path to
    import (ours, or trusted), or a class in a file beside the YAML."""
    module: str                  # as the YAML names it
    dotted: str                  # what to import: package.module.Class
    file: Optional[Path] = None  # the module's file, loaded by path


def task_source(module: str, path, trust_task_code: bool = False) -> TaskSource:
    """Where `module` would be imported from, and whether it may be: never from sys.path
    unless trusted, since importing it would run whatever it holds."""
    if not DOTTED.fullmatch(module):
        raise ConfigError(f"{path}: field 'module': {module!r} is not a dotted path to a class "
                          "(package.module.Class)")
    dotted = REFERENCE_MODULES.get(module, module)
    if dotted.startswith(f"{_OURS}."):
        return TaskSource(module, dotted)
    parts = dotted.split(".")
    folder = Path(path).resolve().parent / "tasks"
    if parts[0] == "tasks" and len(parts) > 2:
        file = folder.joinpath(*parts[1:-1]).with_suffix(".py")
        if file.is_file() and file.resolve().is_relative_to(folder.resolve()):
            return TaskSource(module, dotted, file)
    if trust_task_code:
        return TaskSource(module, dotted)
    raise ConfigError(f"{path}: field 'module': {module!r} is neither a glm130b task class nor "
                      f"a module in {folder}; importing it would run its code, so it needs "
                      "--trust-task-code (trust_task_code=True)")


def _load_file(source: TaskSource):
    """The module of `source.file`, loaded once under a name of its own."""
    name = f"_glm130b_task_code_{hashlib.sha1(str(source.file).encode()).hexdigest()[:12]}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, source.file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickle look classes up here
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def import_task_class(source: TaskSource, path):
    """The class `source` names; the reference's paths give ours."""
    from .tasks import Task
    package, _, name = source.dotted.rpartition(".")
    where = f" from {source.file}" if source.file else ""
    try:
        module = _load_file(source) if source.file else importlib.import_module(package)
        cls = getattr(module, name)
    except Exception as e:  # the module's own code may raise anything: one line all the same
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise ConfigError(f"{path}: field 'module': cannot load {source.module!r}{where}: "
                          f"{reason}") from None
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"{path}: field 'module': {source.module!r} is not a task class")
    return cls


@dataclass
class CheckedYaml:
    """A task file read and checked as far as it can be without importing its class."""
    path: str | Path
    data: dict
    source: TaskSource


def check_task_config(path: str | Path, trust_task_code: bool = False) -> CheckedYaml:
    """Read the YAML as BaseConfig for `module` and `type`, and settle where the class comes
    from; nothing is imported."""
    data = read_yaml(path)
    common = {k: v for k, v in data.items()
              if str(k).replace("-", "_") in BaseConfig.__dataclass_fields__}
    base = parse_config(BaseConfig, common, path)
    if base.module:
        source = task_source(base.module, path, trust_task_code)
    elif base.type in DEFAULT_CLASSES:
        source = TaskSource(DEFAULT_CLASSES[base.type], DEFAULT_CLASSES[base.type])
    else:
        raise ConfigError(f"{path}: field 'module': a task of type '{base.type}' needs one")
    return CheckedYaml(path, data, source)


def finish_task_config(checked: CheckedYaml):
    """(task class, its config): the class imported, then the whole file read as the class's
    own config (reference §7.1)."""
    path = checked.path
    cls = import_task_class(checked.source, path)
    config = parse_config(cls.config_class, checked.data, path)
    if config.type != "other" and config.type != cls.task_type:
        raise ConfigError(f"{path}: field 'type': {cls.__name__} runs '{cls.task_type}' "
                          f"tasks, not '{config.type}'")
    if not config.metrics:
        raise ConfigError(f"{path}: field 'metrics' names no metric")
    unknown = [m for m in config.metrics if m not in cls.METRICS]
    if unknown:
        raise ConfigError(f"{path}: field 'metrics': unknown metric '{unknown[0]}' for "
                          f"{cls.__name__} (known: {', '.join(cls.METRICS)})")
    return cls, config


def load_task_config(path: str | Path, trust_task_code: bool = False):
    """(task class, its config) from a YAML file; see the module's docstring for which
    `module:` values are imported without `trust_task_code`."""
    return finish_task_config(check_task_config(path, trust_task_code))
