"""Zero-shot evaluation (reference §7): YAML task configs, the multiple-choice, generation and
language-model tasks with the reference's inputs and metrics, and the report. A YAML's
`module:` is imported only from the package, from `tasks/` beside the YAML, or when trusted
(`trust_task_code`)."""
from .configs import (BaseConfig, GenerationTaskConfig, LanguageModelTaskConfig,
                      MultiChoiceTaskConfig, load_task_config)
from .report import RunInfo
from .runner import (LoadedTask, check_data, evaluate_task, evaluate_tasks, find_task_files,
                     load_tasks)
from .tasks import GenerationTask, LanguageModelTask, MultiChoiceTask, Task
