"""Tensor parallelism on gloo: a TP=2 model holds the TP=1 model's numbers split, and computes
the same logits and gradients. One launch checks everything (process start-up dominates)."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glm130b import GLM, AttentionMask, GLMConfig, load_checkpoint, save_checkpoint
from glm130b.parallel import (destroy_model_parallel, get_tensor_model_parallel_rank,
                              initialize_model_parallel, shard)

CFG = GLMConfig(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                vocab_size=64, max_sequence_length=32, hidden_dropout=0.0, attention_dropout=0.0)


def build(seed=0):
    torch.manual_seed(seed)
    return GLM(CFG)


def batch():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (2, 10), generator=g)
    pos = torch.arange(10).repeat(2, 1)
    pos[1, 6:] = 4
    return tokens, pos, AttentionMask.from_context_lengths([6, 6], 10, batch_size=2)


def run_and_backward(model):
    tokens, pos, mask = batch()
    logits = model(tokens, pos, mask)
    logits.float().logsumexp(-1).mean().backward()
    return logits.detach()


def local_piece(full, param):
    if not getattr(param, "tensor_model_parallel", False):
        return full
    return shard(full, param.partition_dim, param.partition_stride)


def worker(rank, world, init_file, ckpt_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        single = build()  # before the groups exist: TP=1
        single_logits = run_and_backward(single)
        initialize_model_parallel(world)
        model = build()
        ref = dict(single.named_parameters())
        for name, p in model.named_parameters():
            assert torch.equal(p, local_piece(ref[name].detach(), p)), f"init differs: {name}"
        logits = run_and_backward(model)
        assert (logits - single_logits).abs().max() < 1e-5, "logits differ"
        for name, p in model.named_parameters():
            expected = local_piece(ref[name].grad, p)
            assert torch.allclose(p.grad, expected, atol=1e-5, rtol=1e-4), f"grad differs: {name}"
        with torch.no_grad():
            tokens, pos, mask = batch()
            part = model(tokens, pos, mask, parallel_output=True)
            r = get_tensor_model_parallel_rank()
            assert torch.allclose(part, single_logits[..., r * 32:(r + 1) * 32], atol=1e-5)

        save_checkpoint(model, ckpt_dir, iteration=5)
        dist.barrier()
        with torch.device("meta"):
            loaded = GLM(CFG)
        load_checkpoint(loaded, ckpt_dir)
        with torch.no_grad():
            assert torch.equal(loaded(*batch()), model(*batch()))
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


def test_tp2_equals_tp1_init_forward_backward_and_sharded_checkpoint(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ckpt")), nprocs=2)
    shards = sorted(p.name for p in (tmp_path / "ckpt" / "5").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]
    # the shards merged by the reference's rules give back the TP=1 model
    s0, s1 = (torch.load(tmp_path / "ckpt" / "5" / n, weights_only=True)["module"] for n in shards)
    full = build().state_dict()
    qkv = "transformer.layers.0.attention.query_key_value.weight"
    assert torch.equal(torch.cat([s0[qkv], s1[qkv]]), full[qkv])
    dense = "transformer.layers.1.attention.dense.weight"
    assert torch.equal(torch.cat([s0[dense], s1[dense]], dim=1), full[dense])
    glu = "transformer.layers.0.mlp.dense_h_to_4h.weight"
    halves = [s.chunk(2) for s in (s0[glu], s1[glu])]
    assert torch.equal(torch.cat([halves[0][0], halves[1][0], halves[0][1], halves[1][1]]), full[glu])
    ln = "transformer.layers.1.post_attention_layernorm.weight"
    assert torch.equal(s0[ln], full[ln]) and torch.equal(s1[ln], full[ln])
