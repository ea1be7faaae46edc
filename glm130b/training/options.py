"""What a pretraining run is told, typed: `glm130b.pretrain`'s training options under their
command-line names, with its defaults. The model is a `GLMConfig`, the data a `DataConfig`;
this is the rest (parallelism, optimisation, precision, checkpoints and logging, the seed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UsageError


@dataclass
class TrainingConfig:
    global_batch_size: int
    # Exactly one says how long the run is.
    train_iters: Optional[int] = None
    train_samples: Optional[int] = None

    # parallelism
    model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    partition_method: str = "type:transformer|embedding"
    recompute_activations: bool = False  # --checkpoint-activations, the reference's flag

    # optimisation
    micro_batch_size: int = 1
    rampup_batch_size: Optional[Sequence[int]] = None  # START INCREMENT SAMPLES
    lr: float = 8e-5
    min_lr: float = 0.0
    lr_decay_style: str = "cosine"
    lr_warmup_samples: int = 0
    lr_decay_samples: Optional[int] = None  # None: the whole run
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    clip_grad: Optional[float] = None  # None: the DeepSpeed JSON's, else 1.0; 0 turns it off
    shrink_embedding_gradient_steps: Optional[Sequence[int]] = None  # KEEP RAMP
    skip_train_iteration_range: Sequence[str] = field(default_factory=list)  # "FIRST-LAST"

    # precision and DeepSpeed
    fp16: bool = False
    bf16: bool = False
    deepspeed_config: Optional[str] = None  # JSON: ZeRO, precision; batch sizes are these
    zero_stage: Optional[int] = None  # None: the JSON's, else 1
    initial_loss_scale_power: int = 16
    loss_scale_window: int = 2000
    hysteresis: int = 2
    min_loss_scale: float = 1.0

    # checkpoints and logging
    save: Optional[str] = None
    save_interval: int = 0
    keep_last: int = 0
    load: Optional[str] = None
    overwrite_checkpoints: bool = False  # start although SAVE holds later checkpoints
    exit_interval: Optional[int] = None
    log_interval: int = 10
    tensorboard_dir: Optional[str] = None  # None: SAVE/tensorboard when saving
    train_log: Optional[str] = None        # None: SAVE/train_log.jsonl when saving
    peak_tflops: Optional[float] = None

    # validation on the held-out documents of --split
    eval_interval: int = 1000  # iterations between validations (0: only the final one)
    eval_iters: int = 100      # global batches per validation (0: none)
    override_opt_param_scheduler: bool = False  # resume with a schedule unlike the checkpoint's

    seed: int = 1234
    seq_length: int = 2048  # of every collated sample: the data's --seq-length

    def __post_init__(self):
        if (self.train_iters is None) == (self.train_samples is None):
            raise UsageError("give exactly one of --train-iters and --train-samples")
        if self.eval_interval < 0 or self.eval_iters < 0:
            raise UsageError("--eval-interval and --eval-iters must be >= 0")
        if self.fp16 and self.bf16:
            raise UsageError("give at most one of --fp16 and --bf16")
        if self.save:
            self.tensorboard_dir = self.tensorboard_dir or str(Path(self.save) / "tensorboard")
            self.train_log = self.train_log or str(Path(self.save) / "train_log.jsonl")
