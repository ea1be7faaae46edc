"""The DeepSpeed trainer, run as users run it (subprocesses, gloo on CPU): every parallel layout
trains the same numbers as one process, a resumed run continues exactly, a crash mid-save loses
nothing, a signal saves, and released weights in the reference layout start a pipeline run."""
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from glm130b.checkpoint import save_checkpoint
from glm130b.config import GLMConfig
from glm130b.model import GLM
from helpers import TRAIN_ENV as ENV
from helpers import TRAIN_MODEL as MODEL
from helpers import logged_iterations, losses, pretrain
from helpers import train_args as args_for

pytestmark = pytest.mark.slow


def test_every_layout_trains_the_single_process_numbers(data, tmp_path):
    """DP2 with ZeRO-1, and TP2 x PP2 over 4 processes, against one process (fp32; gradient
    clipping active, so the global norm over split and replicated parameters must be right)."""
    runs = {"single": (1, {}), "dp2-zero1": (2, {}),
            "tp2-pp2": (4, {"model_parallel_size": 2, "pipeline_model_parallel_size": 2,
                            "checkpoint_activations": True})}
    got = {}
    for name, (procs, extra) in runs.items():
        log = tmp_path / f"{name}.jsonl"
        pretrain(args_for(data, train_log=log, **extra), procs)
        got[name] = losses(log)
    single = got["single"]
    assert sorted(single) == [1, 2, 3, 4] and single[4] < single[1]
    for name in ("dp2-zero1", "tp2-pp2"):
        assert sorted(got[name]) == sorted(single)
        for it in single:
            assert abs(got[name][it] - single[it]) < 1e-4, (name, it, got[name][it], single[it])
    clipped = [json.loads(line)["grad_norm"] for line in (tmp_path / "single.jsonl").open()]
    assert max(clipped) > 0.5  # the clip at 0.5 did act


@pytest.mark.parametrize("procs,extra", [
    (1, {"skip_train_iteration_range": ["5-5"]}),
    (2, {"pipeline_model_parallel_size": 2}),
], ids=["plain", "pipeline"])
def test_stopped_and_resumed_run_equals_uninterrupted(data, tmp_path, procs, extra):
    """Dropout on (RNG streams restored), a batch ramp-up 4 -> 8 and an LR warm-up and decay
    counted in samples (schedules restored from the consumed-sample count)."""
    common = dict(hidden_dropout=0.1, attention_dropout=0.1, train_iters=7,
                  rampup_batch_size=(4, 4, 16), lr_warmup_samples=8, lr_decay_samples=48,
                  **extra)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    pretrain(args_for(data, save=whole, **common), procs)
    pretrain(args_for(data, save=parts, exit_interval=3, **common), procs)
    assert (parts / "latest").read_text().strip() == "global_step3"
    out = pretrain(args_for(data, save=parts, load=parts, **common), procs)
    assert "resumed at iteration 3" in out.stdout
    a, b = losses(whole / "train_log.jsonl"), losses(parts / "train_log.jsonl")
    assert sorted(a) == sorted(b) and len(a) >= 6
    assert logged_iterations(parts / "train_log.jsonl") == sorted(b)  # each once
    for it in a:
        assert a[it] == pytest.approx(b[it], abs=1e-6), it
    records = [json.loads(line) for line in (whole / "train_log.jsonl").open()]
    assert [r.get("batch_size") for r in records[:3]] == [4, 4, 4]  # 16 samples at 4, ...
    assert records[-1]["consumed_samples"] == 16 + 8 * (len(records) - 4)


KILLER = """
import os, signal, sys
import glm130b.training.checkpointing as ckpt
real, calls = ckpt.atomic_torch_save, []
def dying(obj, path):
    if "global_step4" in str(path):
        calls.append(path)
        if len(calls) == 2:  # one file of the second checkpoint written, the rest not
            os.kill(os.getpid(), signal.SIGKILL)
    real(obj, path)
ckpt.atomic_torch_save = dying
import glm130b.pretrain
sys.argv = ["glm130b.pretrain", *sys.argv[1:]]
glm130b.pretrain.main(sys.argv[1:])
"""


def test_sigkill_during_a_save_leaves_the_previous_checkpoint(data, tmp_path):
    save = tmp_path / "run"
    argv = args_for(data, save=save, save_interval=2, train_iters=6)
    proc = subprocess.run([sys.executable, "-c", KILLER, *argv], env=ENV, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL
    assert (save / "latest").read_text().strip() == "global_step2"
    assert (save / "global_step4").is_dir()  # the half-written one
    out = pretrain(args_for(data, save=save, load=save, save_interval=2, train_iters=6))
    assert "resumed at iteration 2" in out.stdout
    assert (save / "latest").read_text().strip() == "global_step6"
    assert not list(save.rglob(".*.tmp*"))  # the killed save's temporary file, removed
    reference = tmp_path / "reference"
    pretrain(args_for(data, save=reference, train_iters=6))
    a, b = losses(reference / "train_log.jsonl"), losses(save / "train_log.jsonl")
    assert all(a[i] == pytest.approx(b[i], abs=1e-6) for i in a)


def test_sigterm_saves_then_exits(data, tmp_path):
    save = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "glm130b.pretrain",
                             *args_for(data, save=save, train_iters=100000)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = save / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    last = max(losses(log))
    assert "signal received: saved at iteration" in stdout
    assert (save / "latest").read_text().strip() == f"global_step{last}"
    # A shorter run than the one saved: its decay, implied by --train-iters, is given as saved.
    keep = args_for(data, save=tmp_path / "again", load=save, train_iters=last + 1,
                    lr_decay_samples=100000 * 8)
    assert f"resumed at iteration {last}" in pretrain(keep).stdout


def test_keep_last_and_a_layout_change_is_refused(data, tmp_path):
    save = tmp_path / "run"
    pretrain(args_for(data, save=save, save_interval=1, keep_last=2, train_iters=4))
    assert sorted(p.name for p in save.glob("global_step*")) == ["global_step3", "global_step4"]
    out = pretrain(args_for(data, load=save, train_iters=5, model_parallel_size=2), procs=2,
                   check=False)
    assert out.returncode != 0
    assert "saved at tensor x pipeline parallel 1 x 1, this run is 2 x 1" in out.stderr
    # Each rank says one line; torchrun then reports the failed children in its own traceback.
    assert not [line for line in out.stderr.splitlines() if "glm130b/" in line and "File" in line]


def test_reference_checkpoint_at_tp2_starts_a_pipeline_run(data, tmp_path):
    """Released-style weights (reference layout, 2 shards) start a TP1 x PP2 run; its first
    loss equals the loss of the same weights evaluated directly on the same first batch."""
    from glm130b.checkpoint.convert_tp import convert
    from glm130b.data.infilling import InfillingConfig
    from glm130b.data.mixture import DataConfig, build_mixture
    from glm130b.tokenization import get_tokenizer
    from glm130b.training.collate import collate
    from glm130b.training.engine import lm_loss

    torch.manual_seed(7)
    model = GLM(GLMConfig(**MODEL))
    save_checkpoint(model, tmp_path / "tp1", iteration=100)
    convert(tmp_path / "tp1", tmp_path / "tp2", 2)
    log = tmp_path / "log.jsonl"
    pretrain(args_for(data, load=tmp_path / "tp2", pipeline_model_parallel_size=2,
                      train_iters=1, train_log=log), procs=2)
    first = losses(log)[1]

    infilling = InfillingConfig(seq_length=64, length_per_sample=60,
                                aggregated_samples_per_sequence=2)
    sampler = build_mixture(DataConfig([data[1]], infilling=infilling),
                            get_tokenizer("sentencepiece", data[0]), seed=1234)
    model.train()
    with torch.no_grad():
        expected = []
        for start in range(0, 8, 2):
            batch = collate([sampler[k] for k in range(start, start + 2)], 64)
            logits = model(batch.tokens, batch.position_ids, batch.attention_mask,
                           parallel_output=True)
            expected.append(lm_loss(logits, (batch.targets, batch.loss_mask)).item())
    assert first == pytest.approx(sum(expected) / len(expected), abs=1e-5)


@pytest.mark.parametrize("zero", [0, 1])
def test_nan_steps_are_skipped_and_counted(data, tmp_path, zero):
    """An absurd learning rate makes the weights overflow after one step: every later step is
    NaN, skipped (no update) and counted, and the run finishes."""
    log = tmp_path / "log.jsonl"
    out = pretrain(args_for(data, lr=1e37, zero_stage=zero, train_log=log))
    records = [json.loads(line) for line in log.open()]
    assert [r["skipped"] for r in records] == [False, True, True, True]
    assert "3 skipped steps" in out.stdout


def test_bad_input_is_one_line(data, tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 1,}}')
    out = pretrain(args_for(data, deepspeed_config=bad), check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"{bad}:1: not JSON" in out.stderr
    out = pretrain(args_for(data, data_path=tmp_path / "missing"), check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "missing" in out.stderr.strip().splitlines()[-1]


def test_a_resume_with_another_schedule_is_refused_unless_overridden(data, tmp_path):
    save = tmp_path / "run"
    out = pretrain(args_for(data, save=save, train_iters=2))
    assert f"saved iteration 2 to {save / 'global_step2'} (" in out.stdout
    meta = json.loads((save / "global_step2" / "glm130b_training.json").read_text())
    assert meta["schedule"]["lr"] == 3e-3 and meta["schedule"]["lr_decay_samples"] == 16
    out = pretrain(args_for(data, save=save, load=save, train_iters=4, lr=4e-3), check=False)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert ("error: the checkpoint's schedule differs: lr 0.003 -> 0.004, lr_decay_samples "
            "16 -> 32; --lr-decay-samples 16 keeps the checkpoint's decay; pass "
            "--override-opt_param-scheduler to use the new one") in out.stderr
    out = pretrain(args_for(data, save=save, load=save, train_iters=4, lr=4e-3,
                            override_opt_param_scheduler=True))
    assert "resumed at iteration 2" in out.stdout
    records = [json.loads(line) for line in (save / "train_log.jsonl").open()]
    # the new schedule: at sample 16 of 32, cosine halfway
    assert records[2]["lr"] == pytest.approx(4e-3 * (1 + math.cos(math.pi * 16 / 32)) / 2)
