"""Configs under the reference's names, the 130B shape on meta, memory per GPU, and the
entry points' start-up from the reference's MODEL_ARGS."""
import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glm130b import GLM, GLMConfig, save_checkpoint
from glm130b.cli import config_from_args, model_config
from glm130b.config import add_model_args
from glm130b.errors import UsageError
from glm130b.initialize import (RuntimeConfig, add_initialization_args,
                                initialize_model_and_tokenizer)
from glm130b.tools.memory import meta_model, weight_bytes_per_gpu

ROOT = Path(__file__).resolve().parents[1]


def model_args(script: str, **env) -> list[str]:
    """MODEL_ARGS as bash expands them from configs/<script>."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    out = subprocess.run(["bash", "-c", f"{assigns} source {ROOT / 'configs' / script}; "
                          'echo "$MODEL_ARGS"'], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_reference_model_args_give_the_glm130b_preset():
    parser = add_initialization_args(argparse.ArgumentParser())
    args = parser.parse_args(model_args("model_glm_130b.sh", CHECKPOINT_PATH="/ckpt"))
    assert model_config(args) == GLMConfig.from_preset("glm-130b")
    assert args.model_parallel_size == 8 and args.fp16 and args.load == "/ckpt"
    assert args.tokenizer_type == "icetk-glm-130B"


def test_preset_with_overrides_and_missing_arguments():
    parser = add_model_args(argparse.ArgumentParser())
    cfg = model_config(parser.parse_args(["--preset", "glm-tiny", "--num-layers", "2"]))
    assert cfg.num_layers == 2 and cfg.hidden_size == 256
    with pytest.raises(UsageError, match="--num-layers"):
        model_config(parser.parse_args(["--hidden-size", "64"]))
    with pytest.raises(ValueError, match="not divisible"):
        GLMConfig(num_layers=1, hidden_size=30, num_attention_heads=4, inner_hidden_size=8,
                  vocab_size=10)
    assert abs(GLMConfig.from_preset("glm-130b").deepnorm_alpha - 11.8322) < 1e-4


def test_glm130b_builds_on_meta_with_128_7_billion_parameters():
    model = meta_model(GLMConfig.from_preset("glm-130b"))
    # reference §1.2: 70 layers of 1,812,115,456, the embedding, the final LayerNorm
    assert model.num_parameters() == 70 * 1_812_115_456 + 150528 * 12288 + 2 * 12288
    assert f"{model.num_parameters() / 1e9:.1f}" == "128.7"


def test_weight_memory_per_gpu_worked_by_hand():
    cfg = GLMConfig.from_preset("glm-130b")
    h, inner, v, L = 12288, 32768, 150528, 70
    split = L * (3 * h * h + 3 * h + h * h + 2 * inner * h + 2 * inner + inner * h) + v * h
    replicated = L * (4 * h + h + h) + 2 * h  # LayerNorms, attention.dense and 4h_to_h biases
    assert weight_bytes_per_gpu(cfg, 8, torch.float16) == 2 * (split // 8 + replicated)
    assert weight_bytes_per_gpu(cfg, 1, torch.float32) == 4 * (split + replicated)
    assert round(weight_bytes_per_gpu(cfg, 1, torch.float16) / 1e9, 1) == 257.4
    with pytest.raises(ValueError, match="does not split"):
        weight_bytes_per_gpu(cfg, 7)


@pytest.mark.slow
def test_memory_cli_prints_parameters_and_per_gpu():
    out = subprocess.run([sys.executable, "-m", "glm130b.tools.memory", "--preset", "glm-130b",
                          "--tp", "8"], capture_output=True, text=True, check=True).stdout
    assert "128.7 B parameters" in out and "32.2 GB" in out


def test_initialize_builds_from_tiny_model_args_and_checkpoint(tmp_path):
    from glm130b.tokenization.train import train_tokenizer
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"line {i} of the corpus, 第{i}行。" for i in range(300)))
    tok = train_tokenizer([str(corpus)], tmp_path / "tok", vocab_size=300, model_type="bpe")
    torch.manual_seed(0)
    saved = GLM(GLMConfig.from_preset("glm-tiny"))
    save_checkpoint(saved, tmp_path / "ckpt")
    args = add_initialization_args(argparse.ArgumentParser()).parse_args(
        model_args("model_glm_tiny.sh", QUICKSTART_DIR=str(tmp_path),
                   CHECKPOINT_PATH=str(tmp_path / "ckpt")))
    assert args.tokenizer_model == str(tmp_path / "tokenizer.model")
    model, tokenizer = initialize_model_and_tokenizer(
        model_config(args), config_from_args(RuntimeConfig, args), args.tokenizer_type, str(tok))
    ids = torch.tensor([tokenizer.tokenize("line 3 of the corpus")])
    with torch.no_grad():
        assert torch.equal(model(ids), saved.eval()(ids))
    assert not model.training


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    """The whole path with a short training: the DeepSpeed launcher trains, the export loads."""
    env = dict(os.environ, OMP_NUM_THREADS="2", DS_ACCELERATOR="cpu",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run([sys.executable, "-m", "glm130b.quickstart", "--output-dir",
                          str(tmp_path), "--num-documents", "2000", "--train-iters", "12"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "4,207,440 parameters" in out.stdout
    first, last = (float(x) for x in re.search(r"loss ([\d.]+) at the first step, ([\d.]+) over",
                                               out.stdout).groups())
    assert abs(first - 8.318) < 0.2 and last < first - 1.0  # from ln(4096), clearly down
    loss = float(out.stdout.split("predicted tokens: ")[1].split()[0])
    assert loss < first - 1.0
    assert (tmp_path / "checkpoints" / "glm-tiny" / "latest").read_text().strip() == "12"
    assert "Finish task facts-choice" in out.stdout
