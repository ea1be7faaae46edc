"""The training loop: which samples each rank takes, the schedules applied per step, what a
person watching sees (progress lines, TensorBoard, a JSON line per step), checkpoints at an
interval and on SIGTERM/SIGINT.
"""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from ..config import GLMConfig
from ..model.glm import set_embedding_gradient_shrink
from . import checkpointing
from .collate import micro_batches
from .options import TrainingConfig
from .engine import plain_step
from .flops import mfu, model_flops_per_token, peak_flops
from .pipeline import pipeline_inputs
from .schedules import should_skip
from .validation import evaluate, perplexity


@dataclass
class TrainerState:
    """Where training stands; saved in every checkpoint."""
    iteration: int = 0
    consumed_samples: int = 0
    skipped_iterations: int = 0   # --skip-train-iteration-range: data passed over
    skipped_steps: int = 0        # NaN/inf or loss-scale overflow: no update applied
    layout: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)  # what a resume must match (`schedule_record`)


class StopSignal:
    """SIGTERM/SIGINT ask for a checkpoint and a clean exit after the current step; every rank
    learns of a signal any rank received."""

    def __init__(self):
        self.received: Optional[int] = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signum

    def any_rank(self) -> bool:
        flag = torch.tensor([1 if self.received else 0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class Monitor:
    """Rank 0's view: a JSON line per step, TensorBoard scalars, a progress line per interval."""

    def __init__(self, training: TrainingConfig, model_config: GLMConfig, world: int, device):
        self.rank0 = dist.get_rank() == 0
        self.interval, self.seq_length, self.world = (training.log_interval, training.seq_length,
                                                      world)
        self.flops_per_token = model_flops_per_token(model_config, training.seq_length)
        self.peak = training.peak_tflops * 1e12 if training.peak_tflops else peak_flops(
            device, torch.bfloat16 if training.bf16 or training.fp16 else torch.float32)
        self.window: list[dict] = []
        self.log = self.writer = None
        if self.rank0 and training.train_log:
            Path(training.train_log).parent.mkdir(parents=True, exist_ok=True)
            self.log = open(training.train_log, "a", encoding="utf-8")
        if self.rank0 and training.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(training.tensorboard_dir)

    def step(self, state: TrainerState, record: dict) -> None:
        if not self.rank0:
            return
        if self.log:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()
        self.window.append(record)
        if state.iteration % self.interval == 0:
            self._report(state)

    def _report(self, state: TrainerState) -> None:
        steps = [r for r in self.window if "loss" in r]
        self.window = []
        if not steps:
            return
        seconds = sum(r["step_time"] for r in steps)
        tokens_per_s = sum(r["batch_size"] for r in steps) * self.seq_length / seconds
        tflops = tokens_per_s * self.flops_per_token / self.world / 1e12
        utilisation = mfu(tokens_per_s / self.world, self.flops_per_token, self.peak)
        finite = [r["loss"] for r in steps if math.isfinite(r["loss"])]
        loss = sum(finite) / len(finite) if finite else float("nan")
        last = steps[-1]
        shown = f" | MFU {utilisation:.1%}" if utilisation is not None else ""
        print(f"iteration {state.iteration} | samples {state.consumed_samples:,} | tokens "
              f"{state.consumed_samples * self.seq_length:,} | loss {loss:.4f} | lr "
              f"{last['lr']:.3e} | grad norm {_number(last['grad_norm'])} | loss scale "
              f"{last['loss_scale']:g} | skipped {state.skipped_steps} | {tokens_per_s:,.0f} "
              f"tokens/s | {tflops:.3f} TFLOP/s per device{shown}", flush=True)
        if self.writer:
            scalars = {"loss": loss, "lr": last["lr"], "loss_scale": last["loss_scale"],
                       "batch_size": last["batch_size"],
                       "tokens_per_s": tokens_per_s, "tflops_per_device": tflops,
                       "skipped_steps": state.skipped_steps}
            if last["grad_norm"] is not None:
                scalars["grad_norm"] = last["grad_norm"]
            if utilisation is not None:
                scalars["mfu"] = utilisation
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, state.iteration)
            self.writer.add_scalar("train/loss_vs_samples", loss, state.consumed_samples)
            self.writer.add_scalar("train/loss_vs_tokens", loss,
                                   state.consumed_samples * self.seq_length)
            self.writer.flush()

    def evaluation(self, state: TrainerState, part: str, loss: float, samples: int,
                   seconds: float) -> None:
        """A held-out loss: a progress line, `PART/loss` and `PART/ppl` in TensorBoard, and a
        log record without "loss", so that what reads training losses passes it over."""
        if not self.rank0:
            return
        ppl = perplexity(loss)
        print(f"{part} at iteration {state.iteration} | loss {loss:.4f} | ppl {ppl:.3f} | "
              f"{samples:,} samples | {seconds:.1f} s", flush=True)
        if self.log:
            self.log.write(json.dumps({"iteration": state.iteration, "consumed_samples":
                                       state.consumed_samples, "eval": part, "eval_loss": loss,
                                       "eval_ppl": ppl, "eval_samples": samples}) + "\n")
            self.log.flush()
        if self.writer:
            self.writer.add_scalar(f"{part}/loss", loss, state.iteration)
            self.writer.add_scalar(f"{part}/ppl", ppl, state.iteration)
            self.writer.add_scalar(f"{part}/loss_vs_samples", loss, state.consumed_samples)
            self.writer.flush()

    def close(self) -> None:
        if self.log:
            self.log.close()
        if self.writer:
            self.writer.close()


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _loss_scale(engine) -> float:
    scale = getattr(engine.optimizer, "loss_scale", None)  # fp16 optimizers; None otherwise
    return float(scale) if scale is not None else 1.0


def train(training: TrainingConfig, engine, is_pipeline: bool, sampler, state: TrainerState,
          schedules, model_config: GLMConfig, device,
          held_out: Optional[dict] = None) -> TrainerState:
    """Run until `train_iters` / `train_samples`, `exit_interval` or a signal; checkpoints
    every `save_interval` iterations and at the end. `schedules`: (lr by consumed samples,
    global batch by consumed samples, embedding-gradient shrink by iteration, skipped ranges).
    `held_out`: samplers of the "valid" and "test" documents, where --split gives them:
    validation every `eval_interval` iterations and at the end, the test at the end."""
    lr_at, batch_at, shrink_at, skip_ranges = schedules
    held_out = {part: s for part, s in (held_out or {}).items() if training.eval_iters}
    monitor = Monitor(training, model_config, dist.get_world_size(), device)
    stop = StopSignal()
    batch_size = shrink = None  # set on the engine when they change, not every step
    saved_at, evaluated_at = state.iteration, None

    def save():
        nonlocal saved_at
        if training.save and saved_at != state.iteration:
            t = time.perf_counter()
            path = checkpointing.save(engine, training.save, state.iteration, vars_of(state),
                                      training.keep_last)
            saved_at = state.iteration
            if dist.get_rank() == 0:
                print(f"saved iteration {state.iteration} to {path} "
                      f"({checkpointing.folder_size(path)}, {time.perf_counter() - t:.1f} s)",
                      flush=True)

    def validate(part: str = "valid"):
        nonlocal evaluated_at
        if part not in held_out:
            return
        t = time.perf_counter()
        loss = evaluate(training, engine, is_pipeline, held_out[part], device)
        monitor.evaluation(state, part, loss, training.eval_iters * training.global_batch_size,
                           time.perf_counter() - t)
        evaluated_at = state.iteration if part == "valid" else evaluated_at

    try:
        while not finished(training, state):
            iteration, start = state.iteration + 1, state.consumed_samples
            global_batch = batch_at(start)
            if should_skip(iteration, skip_ranges):
                state.iteration, state.consumed_samples = iteration, start + global_batch
                state.skipped_iterations += 1
                monitor.step(state, {"iteration": iteration, "consumed_samples":
                                     state.consumed_samples, "skipped_data": True})
                continue
            if global_batch != batch_size:
                engine.set_train_batch_size(global_batch)
                batch_size = global_batch
            lr = lr_at(start)
            for group in engine.optimizer.param_groups:
                group["lr"] = lr
            if shrink_at(iteration) != shrink:  # a walk over every module: only when it moves
                shrink = shrink_at(iteration)
                set_embedding_gradient_shrink(engine.module, shrink)
            batches = micro_batches(sampler, start, global_batch, training.micro_batch_size,
                                    training.seq_length, device)
            skipped_before = engine.skipped_steps
            t = time.perf_counter()
            if is_pipeline:
                loss = engine.train_batch(data_iter=((pipeline_inputs(b), (b.targets, b.loss_mask))
                                                     for b in batches))
            else:
                loss = plain_step(engine, batches)
            loss = float(loss)
            step_time = time.perf_counter() - t
            skipped = engine.skipped_steps != skipped_before or not math.isfinite(loss)
            state.iteration, state.consumed_samples = iteration, start + global_batch
            state.skipped_steps += skipped
            norm = engine.get_global_grad_norm()
            monitor.step(state, {"iteration": iteration, "consumed_samples": state.consumed_samples,
                                 "loss": loss, "lr": lr, "batch_size": global_batch,
                                 "grad_norm": None if norm is None else float(norm),
                                 "loss_scale": _loss_scale(engine), "skipped": skipped,
                                 "step_time": step_time})
            if training.eval_interval and iteration % training.eval_interval == 0:
                validate()
            if training.save_interval and iteration % training.save_interval == 0:
                save()
            if stop.any_rank():
                save()
                if dist.get_rank() == 0:
                    print(f"signal received: saved at iteration {state.iteration}, exiting",
                          flush=True)
                break
            if training.exit_interval and iteration % training.exit_interval == 0:
                break
        if finished(training, state):
            if evaluated_at != state.iteration:
                validate()
            validate("test")
        save()
    finally:
        monitor.close()
    return state


def finished(training: TrainingConfig, state: TrainerState) -> bool:
    if training.train_iters is not None and state.iteration >= training.train_iters:
        return True
    return (training.train_samples is not None
            and state.consumed_samples >= training.train_samples)


def vars_of(state: TrainerState) -> dict:
    return dict(state.__dict__)
