"""The reference checkpoint layout: round trips, and one clear line for every broken folder."""
import pickle

import pytest
import torch

from glm130b import GLM, CheckpointError, GLMConfig, load_checkpoint, save_checkpoint
from glm130b.checkpoint.sat import load_state_dict, read_latest, shard_name

TINY = GLMConfig(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                 vocab_size=50, max_sequence_length=32)


def model(seed=0):
    torch.manual_seed(seed)
    return GLM(TINY).eval()


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    src = model(0)
    path = save_checkpoint(src, tmp_path, iteration=49300)
    assert path == tmp_path / "49300" / shard_name(0)
    assert read_latest(tmp_path) == "49300"
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"module"}
    assert "transformer.layers.1.attention.query_key_value.weight" in raw["module"]
    assert raw["module"]["transformer.layers.0.mlp.dense_h_to_4h.weight"].shape == (96, 32)
    dst = model(1)
    assert load_checkpoint(dst, tmp_path) == "49300"
    tokens = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        assert torch.equal(src(tokens), dst(tokens))


def test_meta_model_takes_the_checkpoint_tensors(tmp_path):
    src = model(0)
    save_checkpoint(src, tmp_path)
    with torch.device("meta"):
        dst = GLM(TINY)
    load_checkpoint(dst, tmp_path)
    assert not any(p.is_meta for p in dst.parameters())
    qkv = dst.transformer.layers[0].attention.query_key_value.weight
    assert qkv.tensor_model_parallel and qkv.partition_dim == 0  # split annotations survive
    tokens = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        assert torch.equal(src.eval()(tokens), dst.eval()(tokens))


def test_interrupted_save_leaves_previous_latest(tmp_path, monkeypatch):
    save_checkpoint(model(0), tmp_path, iteration=100)

    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model(1), tmp_path, iteration=200)
    assert read_latest(tmp_path) == "100"
    assert not list((tmp_path / "200").iterdir())  # no half-written shard under its real name


def test_missing_latest_and_iteration_folder_hint(tmp_path):
    save_checkpoint(model(), tmp_path, iteration=7)
    with pytest.raises(CheckpointError, match="pass its parent"):
        load_checkpoint(model(), tmp_path / "7")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model(), tmp_path / "nowhere")


def test_missing_shard_and_wrong_tp(tmp_path):
    save_checkpoint(model(), tmp_path, iteration=3)
    torch.save({"module": {}}, tmp_path / "3" / shard_name(2))
    with pytest.raises(CheckpointError, match="missing shard.*mp_rank_01"):
        load_checkpoint(model(), tmp_path)
    (tmp_path / "3" / shard_name(2)).unlink()
    save_checkpoint(model(), tmp_path, iteration=3, tp_rank=1)
    with pytest.raises(CheckpointError, match="2 shard.*tensor-parallel size 1"):
        load_checkpoint(model(), tmp_path)


def test_missing_key_is_fatal_unexpected_key_warns_wrong_shape_names_both(tmp_path):
    state = model().state_dict()
    state["transformer.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(4)  # as released
    state["transformer.layers.0.attention.extra"] = torch.ones(4)
    save_checkpoint(state, tmp_path / "extra")
    with pytest.warns(UserWarning, match="attention.extra$"):  # inv_freq is known, not named
        load_checkpoint(model(), tmp_path / "extra")

    missing = dict(state)
    del missing["transformer.final_layernorm.bias"]
    save_checkpoint(missing, tmp_path / "missing")
    with pytest.raises(CheckpointError, match="missing key.*final_layernorm.bias"):
        load_checkpoint(model(), tmp_path / "missing")

    wrong = dict(state)
    wrong["transformer.layers.1.attention.dense.weight"] = torch.zeros(32, 16)
    save_checkpoint(wrong, tmp_path / "wrong")
    with pytest.raises(CheckpointError, match=r"layers\.1\.attention\.dense\.weight has shape "
                                              r"\(32, 16\) in the checkpoint but \(32, 32\)"):
        load_checkpoint(model(), tmp_path / "wrong")


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_arbitrary_pickle_is_refused_and_junk_is_reported(tmp_path):
    (tmp_path / "bad").mkdir()
    with open(tmp_path / "bad" / shard_name(0), "wb") as f:
        pickle.dump({"module": Payload()}, f)
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint|unreadable"):
        load_state_dict(tmp_path / "bad" / shard_name(0))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / shard_name(0)).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable|weights-only"):
        load_state_dict(tmp_path / "junk" / shard_name(0))
    torch.save({"state": {}}, tmp_path / "nomodule.pt")
    with pytest.raises(CheckpointError, match="no 'module' entry"):
        load_state_dict(tmp_path / "nomodule.pt")


def test_a_view_is_saved_without_its_whole_storage(tmp_path):
    big = torch.randn(1000, 32)
    path = save_checkpoint({"w": big[:10]}, tmp_path)
    assert path.stat().st_size < 10_000
    assert torch.equal(load_state_dict(path)["w"], big[:10])
