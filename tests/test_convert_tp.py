"""convert_tp: resharding by the reference's rules is exact, and refuses what it cannot do."""
import argparse
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glm130b import GLM, GLMConfig, save_checkpoint
from glm130b.errors import CheckpointError
from glm130b.checkpoint.convert_tp import convert
from glm130b.checkpoint.sat import load_state_dict, shard_paths
from glm130b.cli import config_from_args, model_config
from glm130b.initialize import RuntimeConfig, add_initialization_args, initialize_model
from glm130b.model.masks import AttentionMask
from glm130b.parallel import destroy_model_parallel, shard

CFG = GLMConfig(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                vocab_size=64, max_sequence_length=32, hidden_dropout=0.0, attention_dropout=0.0)
INV_FREQ = "transformer.layers.0.attention.rotary_emb.inv_freq"  # as the released files hold


@pytest.fixture(scope="module")
def tp1(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tp1")
    torch.manual_seed(0)
    state = GLM(CFG).state_dict()
    state[INV_FREQ] = 1.0 / 10000 ** (torch.arange(0, 8, 2).float() / 8)
    save_checkpoint(state, folder, iteration=49300)
    return folder


def shards(folder):
    return [load_state_dict(p) for p in shard_paths(folder)]


def test_round_trip_1_2_4_1_is_bit_identical(tp1, tmp_path):
    convert(tp1, tmp_path / "tp2", 2)
    convert(tmp_path / "tp2", tmp_path / "tp4", 4)
    convert(tmp_path / "tp4", tmp_path / "back", 1)
    (start,), (end,) = shards(tp1), shards(tmp_path / "back")
    assert start.keys() == end.keys()
    for key in start:
        assert torch.equal(start[key], end[key]), key
    assert (tmp_path / "back" / "latest").read_text().strip() == "49300"


def test_split_shards_are_the_models_tensor_parallel_pieces(tp1, tmp_path):
    """1 -> 4 directly equals 1 -> 2 -> 4, and rank r's shard is what a TP=4 model holds on r."""
    convert(tp1, tmp_path / "direct", 4)
    convert(tp1, tmp_path / "tp2", 2)
    convert(tmp_path / "tp2", tmp_path / "tp4", 4)
    (full,) = shards(tp1)
    torch.manual_seed(0)
    params = dict(GLM(CFG).named_parameters())
    for rank, (a, b) in enumerate(zip(shards(tmp_path / "direct"), shards(tmp_path / "tp4"))):
        for key, p in params.items():
            assert torch.equal(a[key], b[key]), key
            want = full[key]
            if getattr(p, "tensor_model_parallel", False):
                want = shard(want, p.partition_dim, p.partition_stride, rank=rank, world=4)
            assert torch.equal(a[key], want), key
        assert torch.equal(a[INV_FREQ], full[INV_FREQ])
    # each file holds only its own numbers, not the whole source storage
    size = os.path.getsize(shard_paths(tmp_path / "direct")[0])
    assert size < os.path.getsize(shard_paths(tp1)[0]) / 2


def test_refusals(tp1, tmp_path):
    with pytest.raises(CheckpointError, match="no 'latest'"):
        convert(tmp_path / "nowhere", tmp_path / "out", 2)
    convert(tp1, tmp_path / "tp2", 2)
    with pytest.raises(CheckpointError, match="one degree must divide the other"):
        convert(tmp_path / "tp2", tmp_path / "out", 3)
    with pytest.raises(CheckpointError, match="does not split"):
        convert(tp1, tmp_path / "out", 32)  # GeGLU's 2 x 48 rows do not split into 64 pieces
    bad = shards(tmp_path / "tp2")[1]
    bad = {k: v.clone() for k, v in bad.items()}
    bad["transformer.layers.1.attention.dense.weight"] = torch.zeros(32, 8)
    save_checkpoint(bad, tmp_path / "tp2", iteration=49300, tp_rank=1)
    with pytest.raises(CheckpointError, match="attention.dense.weight: shards disagree"):
        convert(tmp_path / "tp2", tmp_path / "out", 1)
    shard_paths(tmp_path / "tp2")[1].unlink()  # the last shard: the rest is cut for 2
    with pytest.raises(CheckpointError, match="degree 2 but 1 shard.*missing shard"):
        convert(tmp_path / "tp2", tmp_path / "out", 1)
    convert(tp1, tmp_path / "tp4", 4)
    shard_paths(tmp_path / "tp4")[1].unlink()  # a gap
    with pytest.raises(CheckpointError, match="missing shard"):
        convert(tmp_path / "tp4", tmp_path / "out", 1)
    assert not (tmp_path / "out" / "latest").exists()


@pytest.mark.slow
def test_cli_progress_and_one_line_errors(tp1, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "glm130b.checkpoint.convert_tp", "--input-folder",
                         str(tp1), "--output-folder", str(tmp_path / "tp2"), "--target-tp", "2"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "TP 1 -> 2" in ok.stderr and "2/2" in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "glm130b.checkpoint.convert_tp", "--input-folder",
                          str(tmp_path / "tp2"), "--output-folder", str(tmp_path / "x"),
                          "--target-tp", "3"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr


def load(*extra):
    """The model that the inference entry points load with these flags."""
    parser = add_initialization_args(argparse.ArgumentParser())
    args = parser.parse_args(["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads",
                              "4", "--inner-hidden-size", "48", "--vocab-size", "64",
                              "--max-sequence-length", "32", *extra])
    return initialize_model(model_config(args), config_from_args(RuntimeConfig, args))


def test_quantized_conversion_loads_as_the_reference_loads_it(tp1, tmp_path):
    """convert_tp --quantization-bit-width 4, loaded with --from-quantized-checkpoint, equals
    loading the FP checkpoint and quantising after."""
    out = subprocess.run([sys.executable, "-m", "glm130b.checkpoint.convert_tp", "--input-folder",
                          str(tp1), "--output-folder", str(tmp_path / "int4"), "--target-tp", "1",
                          "--quantization-bit-width", "4"], capture_output=True, text=True)
    assert out.returncode == 0 and "--from-quantized-checkpoint" in out.stdout, out.stderr
    (state,) = shards(tmp_path / "int4")
    qkv = "transformer.layers.0.attention.query_key_value.weight"
    assert state[qkv].dtype == torch.int8 and state[qkv].shape == (96, 16)
    assert state[qkv + "_scale"].shape == (96,)
    from_fp = load("--load", str(tp1), "--quantization-bit-width", "4")
    from_q = load("--load", str(tmp_path / "int4"), "--quantization-bit-width", "4",
                  "--from-quantized-checkpoint")
    with torch.no_grad():
        assert torch.equal(from_fp(*sample()), from_q(*sample()))
    with pytest.raises(CheckpointError, match="load it with --from-quantized-checkpoint"):
        load("--load", str(tmp_path / "int4"))
    with pytest.raises(CheckpointError, match="tied to their tensor-parallel degree"):
        convert(tmp_path / "int4", tmp_path / "again", 2)


def load_worker(rank, world, init_file, folder, result_file):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = load("--load", folder, "--model-parallel-size", str(world),
                     "--sequential-initialization")
        with torch.no_grad():
            logits = model(*sample())
        if rank == 0:
            torch.save(logits, result_file)
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


def sample():
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    return tokens, None, AttentionMask.from_context_lengths([7, 4], 12, batch_size=2)


@pytest.mark.slow
def test_converted_checkpoint_loaded_by_two_processes_gives_tp1_logits(tp1, tmp_path):
    convert(tp1, tmp_path / "tp2", 2)
    mp.spawn(load_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "tp2"),
                                str(tmp_path / "logits.pt")), nprocs=2)
    model = GLM(CFG)
    model.load_state_dict({k: v for k, v in shards(tp1)[0].items() if k != INV_FREQ})
    with torch.no_grad():
        want = model.eval()(*sample())
    got = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert (got - want).abs().max() < 1e-5
