"""MMLU: multiple choice on the few-shot prompts the data gives, one file per subject, the
four category groups of the YAML and an Overall group over all subjects (the paper's number:
its sample-weighted average)."""
from .tasks import MultiChoiceTask


class MMLU(MultiChoiceTask):
    overall_group = "Overall"
