"""Tensor parallelism on gloo with 2 and 4 processes: a TP=N model holds the TP=1 model's
numbers split, and computes the same logits, loss and gradients with both attention paths,
with and without the key/value cache. One launch per size checks everything (process start-up
dominates)."""
import dataclasses

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from glm130b import GLM, AttentionMask, GLMConfig, KVCache, load_checkpoint, save_checkpoint
from glm130b.parallel import (destroy_model_parallel, get_rng_tracker,
                              get_tensor_model_parallel_rank, initialize_model_parallel,
                              model_parallel_manual_seed, shard, vocab_parallel_cross_entropy)
from glm130b.parallel.mappings import gather_from_tensor_model_parallel_region

CFG = GLMConfig(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                vocab_size=64, max_sequence_length=32, hidden_dropout=0.0, attention_dropout=0.0)
IMPLS = ("reference", "sdpa")
CONTEXT = 6


def build(impl="reference", seed=0, **changes):
    torch.manual_seed(seed)
    return GLM(dataclasses.replace(CFG, attention_impl=impl, **changes))


def batch():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (2, 10), generator=g)
    targets = torch.randint(0, 64, (2, 10), generator=g)
    targets[:, :CONTEXT - 1] = -100  # loss on the generated part only, as in training
    pos = torch.arange(10).repeat(2, 1)
    pos[1, CONTEXT:] = 4  # a [MASK]-style row: generated tokens take the mask's position
    mask = AttentionMask.from_context_lengths([CONTEXT, CONTEXT], 10, batch_size=2)
    return tokens, pos, mask, targets


def single_process_run(model):
    """TP=1: logits, mean loss with F.cross_entropy, gradients."""
    tokens, pos, mask, targets = batch()
    logits = model(tokens, pos, mask)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def parallel_run(model):
    """TP=N: the loss from this rank's vocabulary slice, never gathering the logits."""
    tokens, pos, mask, targets = batch()
    part = model(tokens, pos, mask, parallel_output=True)
    per_token = vocab_parallel_cross_entropy(part, targets)
    loss = per_token.sum() / (targets != -100).sum()
    loss.backward()
    return part.detach(), loss.detach()


def cached_decode(model):
    """The context in one call, then one token per call through the cache."""
    tokens, pos, mask, _ = batch()
    cache, pieces = KVCache(), []
    with torch.no_grad():
        pieces.append(model(tokens[:, :CONTEXT], pos[:, :CONTEXT], mask, kv_cache=cache))
        for i in range(CONTEXT, tokens.shape[1]):
            pieces.append(model(tokens[:, i:i + 1], pos[:, i:i + 1], mask, kv_cache=cache))
    return torch.cat(pieces, dim=1)


def local_piece(full, param):
    if not getattr(param, "tensor_model_parallel", False):
        return full
    return shard(full, param.partition_dim, param.partition_stride)


def all_equal_across_ranks(x):
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return all(torch.equal(parts[0], p) for p in parts[1:])


def check_equivalence(world):
    singles = {impl: build(impl) for impl in IMPLS}
    expected = {impl: single_process_run(m) for impl, m in singles.items()}
    initialize_model_parallel(world)
    rank = get_tensor_model_parallel_rank()
    local_vocab = CFG.vocab_size // world
    for impl in IMPLS:
        ref_logits, ref_loss, ref_grads = expected[impl]
        model = build(impl)
        for name, p in model.named_parameters():
            whole = dict(singles[impl].named_parameters())[name].detach()
            assert torch.equal(p, local_piece(whole, p)), f"init differs: {name}"
        part, loss = parallel_run(model)
        mine = ref_logits[..., rank * local_vocab:(rank + 1) * local_vocab]
        assert (part - mine).abs().max() < 1e-5, f"{impl}: logits differ"
        assert abs(loss - ref_loss) < 1e-5, f"{impl}: loss {loss} vs {ref_loss}"
        for name, p in model.named_parameters():
            want = local_piece(ref_grads[name], p)
            assert torch.allclose(p.grad, want, atol=1e-5, rtol=1e-4), f"{impl}: grad {name}"
        model.eval()
        with torch.no_grad():
            full = model(*batch()[:3])
        assert (full - ref_logits).abs().max() < 1e-5, f"{impl}: gathered logits differ"
        assert (cached_decode(model) - ref_logits).abs().max() < 1e-5, f"{impl}: cache differs"
    return model


def check_cross_entropy():
    g = torch.Generator().manual_seed(7)
    full = torch.randn(3, 5, CFG.vocab_size, generator=g, dtype=torch.float64) * 4
    target = torch.randint(0, CFG.vocab_size, (3, 5), generator=g)
    target[0, 0] = -100
    world, rank = dist.get_world_size(), get_tensor_model_parallel_rank()
    part = full.chunk(world, dim=-1)[rank].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(part, target)
    gathered = gather_from_tensor_model_parallel_region(part.detach())
    want = F.cross_entropy(gathered.flatten(0, 1), target.flatten(), reduction="none",
                           ignore_index=-100).view(3, 5)
    assert torch.allclose(loss.double(), want, atol=1e-6), "vocab-parallel CE differs"
    loss.sum().backward()
    leaf = full.clone().requires_grad_()
    F.cross_entropy(leaf.flatten(0, 1), target.flatten(), reduction="sum",
                    ignore_index=-100).backward()
    assert torch.allclose(part.grad, leaf.grad.chunk(world, dim=-1)[rank], atol=1e-6)


def check_random_streams():
    """Shard dropout differs per rank; replicated dropout, and so the residual stream and the
    gathered logits of a training step with dropout, agree on every rank."""
    model_parallel_manual_seed(1234)
    with get_rng_tracker().fork():
        inside = torch.rand(16)
    assert not all_equal_across_ranks(inside), "sharded dropout stream is the same on all ranks"
    assert all_equal_across_ranks(torch.rand(16)), "default stream differs across ranks"
    model = build(hidden_dropout=0.1, attention_dropout=0.1).train()
    logits = model(*batch()[:3])
    assert all_equal_across_ranks(logits.detach()), "training forward diverged across ranks"


def worker(rank, world, init_file, ckpt_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = check_equivalence(world)
        check_cross_entropy()
        check_random_streams()
        save_checkpoint(model, ckpt_dir, iteration=5)
        dist.barrier()
        with torch.device("meta"):
            loaded = GLM(model.config)
        load_checkpoint(loaded, ckpt_dir)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(*batch()[:3]), model(*batch()[:3]))
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_tensor_parallel_equals_single_process(tmp_path, world):
    mp.spawn(worker, args=(world, str(tmp_path / "init"), str(tmp_path / "ckpt")), nprocs=world)
    shards = sorted(p.name for p in (tmp_path / "ckpt" / "5").iterdir())
    assert shards == [f"mp_rank_{r:02d}_model_states.pt" for r in range(world)]
    if world != 2:
        return
    # the shards merged by the reference's rules give back the TP=1 model
    s0, s1 = (torch.load(tmp_path / "ckpt" / "5" / n, weights_only=True)["module"] for n in shards)
    full = build("sdpa").state_dict()
    qkv = "transformer.layers.0.attention.query_key_value.weight"
    assert torch.equal(torch.cat([s0[qkv], s1[qkv]]), full[qkv])
    dense = "transformer.layers.1.attention.dense.weight"
    assert torch.equal(torch.cat([s0[dense], s1[dense]], dim=1), full[dense])
    glu = "transformer.layers.0.mlp.dense_h_to_4h.weight"
    halves = [s.chunk(2) for s in (s0[glu], s1[glu])]
    merged = torch.cat([halves[0][0], halves[1][0], halves[0][1], halves[1][1]])
    assert torch.equal(merged, full[glu])
    ln = "transformer.layers.1.post_attention_layernorm.weight"
    assert torch.equal(s0[ln], full[ln]) and torch.equal(s1[ln], full[ln])


@pytest.mark.slow
def test_pipeline_and_data_groups_follow_megatron_layout(tmp_path):
    mp.spawn(groups_worker, args=(str(tmp_path / "init"),), nprocs=4)


def groups_worker(rank, init_file):
    from glm130b import parallel as P
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=4)
    try:
        P.initialize_model_parallel(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
        # rank = stage * (dp * tp) + replica * tp + tp_rank with tp=2, pp=2, dp=1
        assert P.get_tensor_model_parallel_rank() == rank % 2
        assert P.get_pipeline_model_parallel_rank() == rank // 2
        assert P.get_pipeline_model_parallel_ranks() == [rank % 2, rank % 2 + 2]
        assert P.get_data_parallel_world_size() == 1
        x = torch.tensor([float(rank)])
        dist.all_reduce(x, group=P.get_tensor_model_parallel_group())
        assert x.item() == {0: 1, 1: 1, 2: 5, 3: 5}[rank]
    finally:
        P.destroy_model_parallel()
        dist.destroy_process_group()
