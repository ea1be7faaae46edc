"""`glm130b.checkpoint.export` on checkpoints the real trainer writes here (TP=1, TP=2 and
PP=2 runs of a tiny model): the exported weights are the trained ones exactly, every layout
gives the same model, safetensors holds what the reference layout holds, and what cannot be
exported stops with one line."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glm130b import GLM, GLMConfig, save_checkpoint
from glm130b.checkpoint import load_checkpoint
from glm130b.checkpoint.convert_tp import split_rule
from glm130b.checkpoint.export import export, main
from glm130b.checkpoint.sat import load_state_dict, shard_paths
from glm130b.cli import run
from glm130b.data.corpus import generate_corpus
from glm130b.data.indexed import TokenFileWriter
from glm130b.generation import BaseStrategy
from glm130b.model.masks import AttentionMask
from glm130b.parallel import merge
from glm130b.training.checkpointing import load_file as load_deepspeed_file

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
         "--inner-hidden-size", "170", "--vocab-size", "1024", "--max-sequence-length", "64",
         "--hidden-dropout", "0", "--attention-dropout", "0"]
TRAIN = ["--seq-length", "64", "--length-per-sample", "60", "--aggregated-samples-per-sequence",
         "2", "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "2",
         "--lr", "1e-3", "--zero-stage", "1"]
TWO = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def data(tmp_path_factory, tok_model, tok):
    prefix = tmp_path_factory.mktemp("export-data") / "text"
    with TokenFileWriter(prefix, tok.num_tokens) as out:
        for text in generate_corpus(100, 1):
            out.add(tok.tokenize(text) + [tok.get_command("eod")])
    return ["--tokenizer-type", "sentencepiece", "--tokenizer-model", tok_model,
            "--data-path", str(prefix)]


def train(folder, data, launcher, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    proc = subprocess.run([*launcher, "-m", "glm130b.pretrain", *MODEL, *data, *TRAIN,
                           "--save", str(folder), *extra],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def tp1(tmp_path_factory, data):
    return train(tmp_path_factory.mktemp("tp1"), data, [sys.executable], "--save-interval", "1")


@pytest.fixture(scope="module")
def tp2(tmp_path_factory, data):
    return train(tmp_path_factory.mktemp("tp2"), data, TWO, "--model-parallel-size", "2")


@pytest.fixture(scope="module")
def pp2(tmp_path_factory, data):
    return train(tmp_path_factory.mktemp("pp2"), data, TWO, "--pipeline-model-parallel-size", "2")


def deepspeed_file(path):
    return load_deepspeed_file(path, "cpu")


def exported(folder):
    return [load_state_dict(p) for p in shard_paths(folder)]


def merged(shards):
    return {k: merge([s[k] for s in shards], *split_rule(k)) if split_rule(k) else shards[0][k]
            for k in shards[0]}


def config_of(save):
    step = save / (save / "latest").read_text().strip()
    return GLMConfig(**json.loads((step / "glm130b_training.json").read_text())["model"])


def model_from(folder, config):
    model = GLM(config)
    load_checkpoint(model, folder)
    return model.eval()


def logits(model):
    tokens = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(tokens, None, AttentionMask.from_context_lengths([7, 4], 12, batch_size=2))


def test_tp1_export_loads_into_glm_as_the_trained_tensors(tp1, tmp_path):
    module = deepspeed_file(tp1 / "global_step2" / "mp_rank_00_model_states.pt")["module"]
    final = export(tp1, tmp_path / "out")
    assert final == tmp_path / "out" / "2"
    assert (tmp_path / "out" / "latest").read_text() == "2\n"
    model = GLM(config_of(tp1))
    assert load_checkpoint(model, tmp_path / "out") == "2"
    assert model.state_dict().keys() == module.keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, module[key]), key

    export(tp1, tmp_path / "bf16", dtype=torch.bfloat16)
    [state] = exported(tmp_path / "bf16")
    for key, tensor in module.items():
        assert state[key].dtype == torch.bfloat16 and torch.equal(state[key], tensor.bfloat16())

    # an earlier checkpoint by number: its own weights, named by its own iteration
    first = deepspeed_file(tp1 / "global_step1" / "mp_rank_00_model_states.pt")["module"]
    export(tp1, tmp_path / "first", iteration="1")
    [state] = exported(tmp_path / "first")
    assert (tmp_path / "first" / "latest").read_text() == "1\n"
    assert all(torch.equal(state[k], first[k]) for k in first)
    assert not torch.equal(first["transformer.word_embeddings.weight"],
                           module["transformer.word_embeddings.weight"])


@pytest.mark.parametrize("source", ["tp2", "pp2"])
def test_tp2_and_pp2_exports_are_one_model(source, tp1, request, tmp_path):
    save = request.getfixturevalue(source)
    export(save, tmp_path / "tp1", target_tp=1)
    export(save, tmp_path / "tp2", target_tp=2)
    [whole], halves = exported(tmp_path / "tp1"), exported(tmp_path / "tp2")
    assert len(halves) == 2
    for key, tensor in merged(halves).items():
        assert torch.equal(tensor, whole[key]), key

    step = save / "global_step2"
    if source == "tp2":  # each exported rank is the trained rank's shard, bit for bit
        for rank, half in enumerate(halves):
            module = deepspeed_file(step / f"mp_rank_{rank:02d}_model_states.pt")["module"]
            assert half.keys() == module.keys()
            assert all(torch.equal(half[k], module[k]) for k in module)
    else:  # each pipeline layer file lands under the reference's keys
        def layer(i):
            return deepspeed_file(step / f"layer_{i:02d}-model_00-model_states.pt")
        embedding = whole["transformer.word_embeddings.weight"]
        assert torch.equal(embedding, layer(0)["word_embeddings.weight"])
        assert torch.equal(embedding, layer(4)["word_embeddings.weight"])  # the tied head
        for name, tensor in layer(2).items():
            assert torch.equal(whole[f"transformer.layers.1.{name}"], tensor), name
        assert torch.equal(whole["transformer.final_layernorm.weight"], layer(3)["weight"])

    # The trainer initialises by name, so the same seed trains the same model in any layout.
    export(tp1, tmp_path / "plain")
    want = logits(model_from(tmp_path / "plain", config_of(tp1)))
    got = logits(model_from(tmp_path / "tp1", config_of(save)))
    assert want.abs().max() > 0.1  # a shard out of place would differ by as much
    assert (got - want).abs().max() < 1e-5


def test_export_sh_safetensors_hold_the_reference_layouts_weights(pp2, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), DS_ACCELERATOR="cpu")
    proc = subprocess.run(["bash", "scripts/export.sh", "--input-folder", str(pp2),
                           "--output-folder", str(tmp_path / "out"), "--target-tp", "2",
                           "--safetensors"], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TP 1 -> 2" in proc.stderr and "54/54" in proc.stderr  # progress over 2 x 27 tensors
    assert "--model-parallel-size 2" in proc.stdout
    whole = load_file(tmp_path / "out" / "model.safetensors")
    reference = merged(exported(tmp_path / "out"))
    assert whole.keys() == reference.keys()
    for key, tensor in reference.items():
        assert whole[key].is_contiguous() and torch.equal(whole[key], tensor), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert GLMConfig(**config) == config_of(pp2)
    mode = lambda name: (tmp_path / "out" / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.safetensors") == mode("config.json")  # not owner-only, as the others


def error_of(capsys, *argv):
    with pytest.raises(SystemExit) as exit:
        run(main, list(map(str, argv)))
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_refusals_are_one_line(tp2, pp2, tmp_path, capsys):
    reference = tmp_path / "reference"
    save_checkpoint(GLM(config_of(tp2)).state_dict(), reference, iteration=7)
    err = error_of(capsys, "--input-folder", reference, "--output-folder", tmp_path / "out")
    assert "not a training checkpoint" in err and "convert_tp" in err

    err = error_of(capsys, "--input-folder", tp2, "--output-folder", tmp_path / "out",
                   "--target-tp", "3")
    assert "--target-tp 3 does not divide the attention heads (4)" in err
    err = error_of(capsys, "--input-folder", tp2, "--output-folder", tmp_path / "out",
                   "--iteration", "5")
    assert "global_step5: no such iteration folder" in err

    for save, gone in ((tp2, "mp_rank_01_model_states.pt"),
                       (pp2, "layer_02-model_00-model_states.pt")):
        broken = tmp_path / f"broken-{save.name}"
        shutil.copytree(save, broken)
        (broken / "global_step2" / gone).unlink()
        err = error_of(capsys, "--input-folder", broken, "--output-folder", tmp_path / "out")
        assert f"{gone}: missing; the checkpoint is incomplete" in err
    assert not (tmp_path / "out").exists()


def test_generate_takes_the_export(tp1, data, tmp_path, tok):
    """`python -m glm130b.generate --load EXPORT` writes what the trained weights generate."""
    from glm130b.generate import main as generate
    from helpers import FRANCE, expected_fills
    export(tp1, tmp_path / "out")
    source = tmp_path / "prompts.txt"
    source.write_text(f"q1\t{FRANCE}\n", encoding="utf-8")
    assert generate([*MODEL, *data[:4], "--load", str(tmp_path / "out"), "--out-seq-length", "40",
                     "--input-source", str(source), "--output-path", str(tmp_path / "samples"),
                     "--with-id", "--top_p", "0.7"]) == 0
    model = GLM(config_of(tp1))
    trained = deepspeed_file(tp1 / "global_step2" / "mp_rank_00_model_states.pt")["module"]
    model.load_state_dict(trained)
    [want] = expected_fills(model.eval(), tok, [FRANCE], BaseStrategy, top_k=0, top_p=0.7)
    assert (tmp_path / "samples" / "q1.txt").read_text(encoding="utf-8") == want.answers[0] + "\n"
