"""The recipe's schedules (reference §8.2, §1.10), counted as the reference counts them.

Learning rate and batch size follow consumed *samples* (Megatron's AnnealingLR and
RampupBatchsizeNumMicroBatches, as `--lr-warmup-samples`, `--lr-decay-samples`,
`--rampup-batch-size` drive them); the embedding-gradient shrink and the skipped data ranges
follow iterations, counted from 1 as Megatron counts them. Pure arithmetic: a resumed run
that restores the consumed samples and the iteration gets the same values back.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

LR_STYLES = ("cosine", "linear", "constant")


class LRSchedule:
    """Linear warm-up from 0 to `lr`, then decay to `min_lr` at `decay_samples` (counted from
    the start of training, warm-up included), then `min_lr`. No `decay_samples`: `lr` after
    the warm-up."""

    def __init__(self, lr: float, min_lr: float = 0.0, warmup_samples: int = 0,
                 decay_samples: Optional[int] = None, style: str = "cosine"):
        if style not in LR_STYLES:
            raise ValueError(f"lr decay style must be one of {', '.join(LR_STYLES)}, not {style!r}")
        if not 0.0 <= min_lr <= lr:
            raise ValueError(f"need 0 <= min lr <= lr, got min lr {min_lr} and lr {lr}")
        if warmup_samples < 0:
            raise ValueError(f"lr warm-up samples must be >= 0, got {warmup_samples}")
        if decay_samples is not None and decay_samples <= warmup_samples:
            raise ValueError(f"lr decay samples ({decay_samples}) must exceed the warm-up "
                             f"samples ({warmup_samples}): decay is counted from sample 0")
        self.lr, self.min_lr, self.style = lr, min_lr, style
        self.warmup_samples, self.decay_samples = warmup_samples, decay_samples

    def __call__(self, consumed_samples: int) -> float:
        if self.warmup_samples > 0 and consumed_samples <= self.warmup_samples:
            return self.lr * consumed_samples / self.warmup_samples
        if self.style == "constant" or self.decay_samples is None:
            return self.lr
        if consumed_samples > self.decay_samples:
            return self.min_lr
        ratio = ((consumed_samples - self.warmup_samples)
                 / (self.decay_samples - self.warmup_samples))
        if self.style == "cosine":
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        else:
            coeff = 1.0 - ratio
        return self.min_lr + coeff * (self.lr - self.min_lr)


def check_divisible(batch: int, micro_batch_size: int, data_parallel_size: int,
                    what: str = "global batch size") -> None:
    """Every data-parallel rank runs whole micro-batches: the batch must split evenly."""
    if batch % (micro_batch_size * data_parallel_size):
        raise ValueError(f"{what} {batch} is not divisible by micro batch size "
                         f"{micro_batch_size} x data parallel size {data_parallel_size}")


class BatchSizeRampup:
    """Global batch size from `start` up to `global_batch_size` in steps of `increment`, each
    step held for an equal share of the first `ramp_samples` samples; then the global size.
    The arithmetic (float share, int of the quotient) is Megatron's, so the batch changes at
    the same sample as in the reference's run."""

    def __init__(self, start: int, increment: int, ramp_samples: int, global_batch_size: int):
        if not 0 < start <= global_batch_size:
            raise ValueError(f"ramp-up start batch {start} must be in 1..global batch size "
                             f"{global_batch_size}")
        if increment <= 0 or ramp_samples < 0:
            raise ValueError(f"ramp-up increment ({increment}) must be > 0 and samples "
                             f"({ramp_samples}) >= 0")
        if (global_batch_size - start) % increment:
            raise ValueError(f"ramp-up from {start} to {global_batch_size} is not a whole "
                             f"number of increments of {increment}")
        self.start, self.increment = start, increment
        self.ramp_samples, self.global_batch_size = ramp_samples, global_batch_size
        self.num_increments = (global_batch_size - start) // increment
        if self.num_increments and ramp_samples:
            self.samples_per_increment = ramp_samples / self.num_increments

    @classmethod
    def from_flag(cls, values: Optional[Sequence], global_batch_size: int) -> "BatchSizeRampup":
        """From `--rampup-batch-size START INCREMENT SAMPLES`; None keeps the global size."""
        if values is None:
            return cls(global_batch_size, 1, 0, global_batch_size)
        try:
            start, increment, samples = (int(v) for v in values)
        except ValueError:
            raise ValueError(f"--rampup-batch-size takes three integers START INCREMENT "
                             f"SAMPLES, got {' '.join(map(str, values))!r}") from None
        return cls(start, increment, samples, global_batch_size)

    def __call__(self, consumed_samples: int) -> int:
        if not self.num_increments or not self.ramp_samples:
            return self.global_batch_size
        steps = int(consumed_samples / self.samples_per_increment)
        return min(self.global_batch_size, self.start + steps * self.increment)

    def check_divisible(self, micro_batch_size: int, data_parallel_size: int) -> None:
        """Start, increment and global size divisible means every batch of the ramp is."""
        check_divisible(self.global_batch_size, micro_batch_size, data_parallel_size)
        if self.num_increments:
            check_divisible(self.start, micro_batch_size, data_parallel_size,
                            "ramp-up start batch size")
            check_divisible(self.increment, micro_batch_size, data_parallel_size,
                            "ramp-up batch size increment")


class ShrinkSchedule:
    """Embedding gradient shrink α by iteration (`--shrink-embedding-gradient-steps x1 x2`):
    α for the first x1 iterations, then linearly to 1.0 (no shrink) over the next x2."""

    def __init__(self, alpha: float, steps: Optional[Sequence[int]] = None):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"shrink embedding gradient alpha must be in (0, 1], got {alpha}")
        if steps is not None:
            if len(steps) != 2 or int(steps[0]) < 0 or int(steps[1]) <= 0:
                raise ValueError(f"--shrink-embedding-gradient-steps takes x1 >= 0 and x2 > 0, "
                                 f"got {' '.join(map(str, steps))}")
            steps = (int(steps[0]), int(steps[1]))
        self.alpha, self.steps = alpha, steps

    def __call__(self, iteration: int) -> float:
        if self.steps is None:
            return self.alpha
        hold, ramp = self.steps
        if iteration <= hold:
            return self.alpha
        if iteration >= hold + ramp:
            return 1.0
        return self.alpha + (1.0 - self.alpha) * (iteration - hold) / ramp


def parse_skip_ranges(items: Optional[Sequence[str]]) -> list[tuple[int, int]]:
    """`--skip-train-iteration-range 40701-40900 42401-42600`: inclusive, 1-based iteration
    ranges whose batches are read and thrown away (the reference's answer to loss spikes)."""
    ranges = []
    for item in items or ():
        try:
            first, last = (int(v) for v in item.split("-"))
        except ValueError:
            raise ValueError(f"skip range {item!r} is not FIRST-LAST (e.g. 40701-40900)") from None
        if not 1 <= first <= last:
            raise ValueError(f"skip range {item!r} must have 1 <= FIRST <= LAST")
        ranges.append((first, last))
    return sorted(ranges)


def should_skip(iteration: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(first <= iteration <= last for first, last in ranges)


def decay_samples(training) -> int:
    """--lr-decay-samples, else the whole run (--train-samples, or --train-iters x batch)."""
    return (training.lr_decay_samples or training.train_samples
            or training.train_iters * training.global_batch_size)


def schedule_record(training, clip: float) -> dict:
    """What a checkpoint records of the schedule, resolved (the decay the run length implies,
    the clipping the DeepSpeed JSON gives), so that a resume can tell whether it keeps it."""
    rampup = training.rampup_batch_size
    return {"lr": training.lr, "min_lr": training.min_lr,
            "lr_warmup_samples": training.lr_warmup_samples,
            "lr_decay_samples": decay_samples(training),
            "lr_decay_style": training.lr_decay_style,
            "rampup_batch_size": list(rampup) if rampup else None,
            "clip_grad": clip, "weight_decay": training.weight_decay}


def schedule_changes(saved: dict, now: dict) -> list[str]:
    """"name old -> new" for every recorded value that differs (a key the checkpoint lacks is
    not compared: it was saved before the key was recorded)."""
    return [f"{key} {saved[key]} -> {now[key]}" for key in now
            if key in saved and saved[key] != now[key]]
