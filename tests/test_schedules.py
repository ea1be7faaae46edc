"""The recipe's schedules against hand-worked values (reference §8.2, §1.10), the shrink as the
trainer sets it, the training config as the command line makes it, the FLOPs count against the
model's own parameters and the paper's MFU, and the loss plot end to end."""
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glm130b.errors import UsageError
from glm130b.config import GLMConfig
from glm130b.model import GLM
from glm130b.tools.memory import meta_model
from glm130b.tools.plot_loss import main as plot_main, moving_average, read_scalars
from glm130b.training.flops import mfu, model_flops_per_token, num_parameters, peak_flops
from glm130b.training.schedules import (BatchSizeRampup, LRSchedule, ShrinkSchedule,
                                        decay_samples, schedule_record,
                                        check_divisible, parse_skip_ranges, should_skip)

REPO = Path(__file__).resolve().parents[1]

# The reference's recipe: peak 8e-5, min 8e-6, warm-up 1,098,632 samples, decay ends at
# sample 197,753,905, so the cosine spans D - W = 196,655,273 samples.
LR, MIN_LR, WARMUP, DECAY = 8e-5, 8e-6, 1_098_632, 197_753_905


def recipe(style="cosine"):
    return LRSchedule(LR, MIN_LR, WARMUP, DECAY, style)


def test_lr_warmup_is_linear_from_zero():
    lr = recipe()
    assert lr(0) == 0.0
    assert lr(192) == pytest.approx(8e-5 * 192 / 1_098_632, rel=1e-12)  # first batch: 1.398e-8
    assert lr(549_316) == pytest.approx(4e-5, rel=1e-12)                # half of the warm-up
    assert lr(WARMUP) == pytest.approx(8e-5, rel=1e-12)


def test_lr_cosine_decay_by_hand():
    lr = recipe()
    # A quarter in: W + (D - W)/4 = 1,098,632 + 49,163,818.25 -> 50,262,450 (ratio 0.25 - 1.3e-9)
    # lr = 8e-6 + 0.5 (cos(pi/4) + 1) 7.2e-5 = 8e-6 + 0.5 * 1.7071068 * 7.2e-5 = 6.945584e-5
    assert lr(50_262_450) == pytest.approx(6.945584e-5, rel=1e-6)
    # Half way: W + (D - W)/2 = 99,426,268.5 -> at 99,426,268 cos(pi/2 - 8e-9) ~ 8e-9, so
    # lr = 8e-6 + 0.5 * 7.2e-5 = 4.4e-5 (off by 3e-13)
    assert lr(99_426_268) == pytest.approx(4.4e-5, abs=1e-12)
    grid = [lr(s) for s in range(WARMUP, DECAY + 1, 1_000_000)]
    assert all(x > y for x, y in zip(grid, grid[1:]))            # falls all the way down
    assert lr(DECAY) == pytest.approx(MIN_LR, rel=1e-12)
    assert lr(DECAY + 1) == MIN_LR and lr(219_726_562) == MIN_LR        # the planned budget


def test_lr_linear_and_constant_styles():
    lr = recipe("linear")
    assert lr(549_316) == pytest.approx(4e-5, rel=1e-12)                # warm-up is shared
    assert lr(50_262_450) == pytest.approx(8e-6 + 0.75 * 7.2e-5, rel=1e-6)   # 6.2e-5
    assert lr(99_426_268) == pytest.approx(4.4e-5, rel=1e-6)
    assert lr(DECAY + 1) == MIN_LR
    constant = recipe("constant")
    assert constant(549_316) == pytest.approx(4e-5) and constant(DECAY + 1) == LR
    no_decay = LRSchedule(1e-3, warmup_samples=100)
    assert no_decay(50) == pytest.approx(5e-4) and no_decay(10**9) == 1e-3
    assert LRSchedule(1e-3, decay_samples=100, style="linear")(0) == 1e-3  # no warm-up


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr=1e-4, min_lr=2e-4), "min lr"),
    (dict(lr=1e-4, warmup_samples=100, decay_samples=100), "decay samples (100)"),
    (dict(lr=1e-4, style="exponential"), "decay style"),
])
def test_lr_rejects_bad_settings(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        LRSchedule(**kwargs)


def test_batch_rampup_of_the_recipe():
    # 192 -> 4224 in steps of 24: 168 increments over 5,493,164 samples, one per
    # 5,493,164 / 168 = 32,697.40 samples.
    ramp = BatchSizeRampup(192, 24, 5_493_164, 4224)
    assert ramp.num_increments == 168
    assert ramp(0) == 192
    assert ramp(32_694) == 192 and ramp(32_697) == 192
    assert ramp(32_698) == 216
    assert ramp(3_269_740) == 192 + 99 * 24      # 100 increments need 3,269,740.48 samples
    assert ramp(3_269_741) == 192 + 100 * 24
    assert ramp(5_493_163) == 4200
    assert ramp(5_493_164) == 4224 and ramp(10**9) == 4224
    sizes = [ramp(s) for s in range(0, 5_600_000, 997)]
    assert sizes == sorted(sizes) and set(sizes) == set(range(192, 4225, 24))


def test_batch_rampup_from_flag_and_checks():
    ramp = BatchSizeRampup.from_flag(["192", "24", "5493164"], 4224)
    assert (ramp.start, ramp.increment, ramp.ramp_samples) == (192, 24, 5_493_164)
    assert ramp(32_698) == 216
    constant = BatchSizeRampup.from_flag(None, 64)
    assert constant(0) == constant(10**6) == 64
    for bad in (["192", "24"], ["a", "24", "100"]):
        with pytest.raises(ValueError, match="START INCREMENT SAMPLES"):
            BatchSizeRampup.from_flag(bad, 4224)
    with pytest.raises(ValueError, match="whole number of increments of 25"):
        BatchSizeRampup(192, 25, 1000, 4224)
    with pytest.raises(ValueError, match="start batch 5000"):
        BatchSizeRampup(5000, 24, 1000, 4224)

    ramp.check_divisible(1, 24)                   # the reference: micro-batch 1, DP 24
    ramp.check_divisible(2, 12)
    # 192 and 4224 split over 48 ranks, the increment of 24 does not
    with pytest.raises(ValueError,
                       match="increment 24 .*micro batch size 1 .*data parallel size 48"):
        ramp.check_divisible(1, 48)
    with pytest.raises(ValueError, match="global batch size 4224 .*size 5 .*size 1"):
        ramp.check_divisible(5, 1)
    constant.check_divisible(4, 16)
    with pytest.raises(ValueError, match="global batch size 100 "):
        check_divisible(100, 3, 1)


def test_shrink_schedule():
    assert ShrinkSchedule(0.1)(1) == ShrinkSchedule(0.1)(10**6) == 0.1
    shrink = ShrinkSchedule(0.1, [100, 50])      # hold 100 iterations, ramp over 50
    assert shrink(1) == shrink(100) == 0.1
    assert shrink(101) == pytest.approx(0.1 + 0.9 / 50)
    assert shrink(125) == pytest.approx(0.55)
    assert shrink(150) == 1.0 and shrink(10**6) == 1.0
    for bad in (dict(alpha=0.0), dict(alpha=0.1, steps=[100]), dict(alpha=0.1, steps=[10, 0])):
        with pytest.raises(ValueError):
            ShrinkSchedule(**bad)


def test_the_shrink_is_set_on_the_modules_and_leaves_the_config_alone():
    """What the trainer does each step: `set_embedding_gradient_shrink` on the model (plain, or
    the pipeline's embedding) scales the embedding's gradient by exactly the factor (a power of
    two, so exactly), and nothing else; the config every module shares keeps its alpha, and
    evaluation never shrinks."""
    from glm130b.model.glm import set_embedding_gradient_shrink
    from glm130b.training.pipeline import EmbeddingPipe

    config = GLMConfig(num_layers=1, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                       vocab_size=64, hidden_dropout=0.0, attention_dropout=0.0,
                       shrink_logit_embedding_gradient=True)  # both uses shrunk: the whole grad
    before = dataclasses.asdict(config)
    torch.manual_seed(0)
    plain, pipe = GLM(config), EmbeddingPipe(config)
    model = torch.nn.ModuleList([plain, pipe])
    assert plain.shrink_alpha == pipe.shrink_alpha == 0.1  # the config's, to begin with
    tokens = torch.randint(0, 64, (2, 8))

    def gradients(alpha: float, training: bool = True) -> dict[str, torch.Tensor]:
        set_embedding_gradient_shrink(model, alpha)
        model.train(training).zero_grad()
        plain(tokens).square().sum().backward()
        pipe(pipe((tokens, None, None, None))[0]).square().sum().backward()
        return {**{n: p.grad for n, p in plain.named_parameters()},
                "pipe": pipe.word_embeddings.weight.grad}

    full, shrunk = gradients(1.0), gradients(0.25)
    assert plain.shrink_alpha == pipe.shrink_alpha == 0.25
    embedding = ("transformer.word_embeddings.weight", "pipe")
    assert all(full[name].abs().max() > 0 for name in embedding)
    for name in full:
        assert torch.equal(shrunk[name], 0.25 * full[name] if name in embedding else full[name])
    evaluated = gradients(0.25, training=False)
    assert all(torch.equal(evaluated[name], full[name]) for name in full)
    assert dataclasses.asdict(config) == before


def test_training_config_is_the_command_line_typed():
    """`TrainingConfig`'s defaults are pretrain's; the logs go under --save unless given."""
    from glm130b.pretrain import parse_args
    from glm130b.training.options import TrainingConfig

    required = ["--data-path", "corpus", "--global-batch-size", "8"]
    assert parse_args(required + ["--train-iters", "5"])[1] == TrainingConfig(8, train_iters=5)
    _, saving = parse_args(required + ["--train-samples", "80", "--save", "run",
                                       "--train-log", "log.jsonl", "--checkpoint-activations"])
    assert saving.recompute_activations and saving.train_samples == 80
    assert (saving.tensorboard_dir, saving.train_log) == (str(Path("run", "tensorboard")),
                                                          "log.jsonl")
    for wrong in ([], ["--train-iters", "5", "--train-samples", "80"]):
        with pytest.raises(SystemExit) as exit:  # a usage error, as argparse reports its own
            parse_args(required + wrong)
        assert exit.value.code == 2
    with pytest.raises(UsageError, match="exactly one of --train-iters and --train-samples"):
        TrainingConfig(8)


MEGATRON = [  # (Megatron's spelling, ours), on top of --global-batch-size 8 --train-iters 10
    (["--tensor-model-parallel-size", "2"], ["--model-parallel-size", "2"]),
    (["--lr-warmup-iters", "3"], ["--lr-warmup-samples", "24"]),
    (["--lr-warmup-fraction", "0.1"], ["--lr-warmup-samples", "8"]),
    (["--lr-warmup-fraction", "0.25", "--lr-decay-iters", "6"],
     ["--lr-warmup-samples", "12", "--lr-decay-samples", "48"]),
    (["--lr-decay-iters", "6"], ["--lr-decay-samples", "48"]),
    (["--recompute-activations"], ["--checkpoint-activations"]),
    (["--deepspeed"], []),
    (["--override-opt-param-scheduler"], ["--override-opt_param-scheduler"]),
]


@pytest.mark.parametrize("theirs,ours", MEGATRON, ids=[m[0][0] for m in MEGATRON])
def test_megatron_flags_set_what_ours_set(theirs, ours):
    from glm130b.pretrain import parse_args

    base = ["--data-path", "corpus", "--global-batch-size", "8", "--train-iters", "10"]
    assert parse_args(base + theirs)[1] == parse_args(base + ours)[1]


def test_megatron_flags_that_clash_or_map(capsys):
    from glm130b.pretrain import parse_args

    base = ["--data-path", "corpus", "--global-batch-size", "8", "--train-iters", "10"]
    assert parse_args(base + ["--use-flash-attn"])[0].attention_impl == "sdpa"
    assert parse_args(base)[0].attention_impl is None
    for clash in (["--lr-warmup-iters", "1", "--lr-warmup-samples", "8"],
                  ["--lr-decay-iters", "1", "--lr-decay-samples", "8"]):
        with pytest.raises(SystemExit):
            parse_args(base + clash)
        assert "give at most one of" in capsys.readouterr().err


def test_the_tiny_recipe_warms_up_over_the_run_its_flags_give():
    """`GPUS=2 bash scripts/pretrain.sh --train-iters 6` failed on a warm-up the recipe computed
    from its own TRAIN_ITERS: its arguments, then the user's, as scripts/pretrain.sh passes them."""
    from glm130b.pretrain import parse_args

    root = Path(__file__).resolve().parents[1]
    argv = subprocess.run(["bash", "-c", "source configs/pretrain_glm_tiny.sh; echo $MODEL_ARGS "
                           "$PARALLEL_ARGS $DATA_ARGS $TRAIN_ARGS $SAVE_ARGS"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.split()
    for extra, warmup in ([], 480), (["--train-iters", "6"], 9):
        training = parse_args(argv + extra)[1]
        assert training.lr_warmup_samples == warmup
        LRSchedule(training.lr, training.min_lr, training.lr_warmup_samples,
                   decay_samples(training))  # a schedule that can run


def test_a_resume_keeps_the_checkpoints_schedule():
    from glm130b.pretrain import parse_args
    from glm130b.training.start import check_schedule

    base = ["--data-path", "corpus", "--global-batch-size", "8", "--lr", "0.002"]
    saved = schedule_record(parse_args(base + ["--train-iters", "10"])[1], 1.0)
    assert saved["lr_decay_samples"] == 80
    check_schedule(saved, saved)
    check_schedule({}, saved)  # a checkpoint from before the record: as before
    longer = schedule_record(parse_args(base + ["--train-iters", "20", "--lr", "0.003"])[1], 1.0)
    with pytest.raises(UsageError) as e:
        check_schedule(saved, longer)
    assert str(e.value) == ("the checkpoint's schedule differs: lr 0.002 -> 0.003, "
                            "lr_decay_samples 80 -> 160; --lr-decay-samples 80 keeps the "
                            "checkpoint's decay; pass --override-opt_param-scheduler to use the "
                            "new one")
    kept = parse_args(base + ["--train-iters", "20", "--lr-decay-samples", "80"])[1]
    check_schedule(saved, schedule_record(kept, 1.0))


def test_skip_ranges():
    ranges = parse_skip_ranges(["42401-42600", "40701-40900"])
    assert ranges == [(40701, 40900), (42401, 42600)]
    skipped = [i for i in range(40000, 43000) if should_skip(i, ranges)]
    assert skipped == list(range(40701, 40901)) + list(range(42401, 42601))
    assert parse_skip_ranges(None) == [] and not should_skip(1, [])
    for bad in ("40701", "a-b", "40900-40701", "0-5", "1-2-3", "-5"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            parse_skip_ranges(["1-2", bad])


@pytest.mark.parametrize("config", [
    GLMConfig.from_preset("glm-tiny"),
    GLMConfig(num_layers=3, hidden_size=96, num_attention_heads=4, inner_hidden_size=200,
              vocab_size=1000, max_sequence_length=64),
])
def test_parameter_count_matches_the_model(config):
    assert num_parameters(config) == sum(p.numel() for p in GLM(config).parameters())


def test_glm_130b_flops_and_the_papers_mfu():
    config = GLMConfig.from_preset("glm-130b")
    n = num_parameters(config)
    assert n == meta_model(config).num_parameters() and 128e9 < n < 131e9
    per_token = model_flops_per_token(config, 2048)
    assert per_token == 6 * n + 12 * 70 * 12288 * 2048
    # Paper §8.1: 48 samples/s of 2048 tokens on 768 A100s (312 TFLOP/s bf16/fp16) -> MFU 32.5%
    assert mfu(48 * 2048 / 768, per_token, 312e12) == pytest.approx(0.325, abs=0.001)
    assert mfu(1000.0, per_token, None) is None


def test_peak_flops_by_device_name(monkeypatch):
    assert peak_flops("cpu", torch.bfloat16) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    names = {"NVIDIA H100 80GB HBM3": (989.4e12, 494.7e12), "NVIDIA H200": (989.4e12, 494.7e12),
             "NVIDIA A100-SXM4-40GB": (312e12, 156e12), "NVIDIA H100 PCIe": (756e12, 378e12)}
    for name, (half, single) in names.items():
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, name=name: name)
        assert peak_flops("cuda:0", torch.bfloat16) == peak_flops("cuda", torch.float16) == half
        assert peak_flops("cuda:0", torch.float32) == single
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla T4")
    assert peak_flops("cuda:0", torch.float16) is None


def write_events(folder, start, stop, offset=0.0):
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(str(folder))
    for step in range(start, stop):
        loss = 10.0 / step + offset
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("train/loss_vs_samples", loss, step * 8)
    writer.close()


def test_plot_loss_writes_a_png(tmp_path):
    a, b = tmp_path / "run-a", tmp_path / "run-b" / "tb"
    write_events(a, 1, 11)
    write_events(a, 6, 13, offset=1.0)           # resumed from iteration 5: 6..10 again
    write_events(b, 1, 21)
    scalars = read_scalars(a)
    steps, values = zip(*scalars["train/loss"])
    assert steps == tuple(range(1, 13))
    assert values[:5] == pytest.approx([10.0, 5.0, 10 / 3, 2.5, 2.0])
    assert values[5:] == pytest.approx([10 / s + 1.0 for s in range(6, 13)])

    out = tmp_path / "loss.png"
    assert plot_main([str(a), str(tmp_path / "run-b"), "--output", str(out),
                      "--x", "samples", "--smooth", "3"]) == 0
    import matplotlib.image
    image = matplotlib.image.imread(out)
    assert image.shape == (600, 1080, 4) and image[..., :3].std() > 0.01
    assert not list(tmp_path.glob(".loss.png.tmp*"))

    with pytest.raises(UsageError, match=r"'train/loss_vs_tokens' under .*run-a; it has: "
                                         r"train/loss, train/loss_vs_samples"):
        plot_main([str(a), "--x", "tokens", "--output", str(out)])


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 5) == [2.0, 3.0]


def test_plot_loss_cli_errors_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "glm130b.tools.plot_loss", str(tmp_path),
                           "--output", str(tmp_path / "loss.png")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: no TensorBoard event files under {tmp_path}"]
    assert not (tmp_path / "loss.png").exists()
