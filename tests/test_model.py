"""The model against the reference: its own logits, a slow re-computation from the formulas,
and the equivalences between paths (fast attention, cached decoding)."""
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glm130b import GLM, AttentionMask, GLMConfig, KVCache, load_checkpoint, save_checkpoint

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
TINY = dict(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
            vocab_size=50, max_sequence_length=64, hidden_dropout=0.0, attention_dropout=0.0)


def randomized(config: GLMConfig, seed: int = 0) -> GLM:
    """A model whose every parameter (LayerNorms and biases too) is random and O(1)-ish, so no
    term of the computation can hide behind a zero or a one."""
    torch.manual_seed(seed)
    model = GLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def glm_batch(seq_len=12, context=8, mask_pos=7):
    """Two samples: [gMASK] (positions count on) and [MASK] (sop onward at the mask's place)."""
    torch.manual_seed(1)
    tokens = torch.randint(0, 50, (2, seq_len))
    pos = torch.arange(seq_len).repeat(2, 1)
    pos[1, context:] = mask_pos
    mask = AttentionMask.from_context_lengths(context, seq_len, batch_size=2)
    return tokens, pos, mask


# ---------------------------------------------------------------- the reference's own logits

@pytest.fixture(scope="module")
def reference():
    meta = json.loads((FIXTURES / "reference_tiny.json").read_text())
    tensors = load_file(str(FIXTURES / "reference_tiny.safetensors"))
    weights = {k[len("weights/"):]: v for k, v in tensors.items() if k.startswith("weights/")}
    return meta["config"], weights, tensors


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_reproduces_reference_logits_through_the_reference_layout(reference, impl, tmp_path):
    config, weights, t = reference
    save_checkpoint(weights, tmp_path, iteration="release")
    model = GLM(GLMConfig(**config, attention_impl=impl)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference's rotary inv_freq keys load silently
        assert load_checkpoint(model, tmp_path) == "release"
    with torch.no_grad():
        dense = model(t["batch/tokens"], t["batch/position_ids"], t["batch/attention_mask"])
        compact = model(t["batch/tokens"], t["batch/position_ids"],
                        AttentionMask.from_context_lengths(8, 12, batch_size=2))
    assert (dense - t["batch/logits"]).abs().max() < 1e-5
    assert torch.equal(dense, compact)


def test_fp16_rotary_tables_stay_close_to_fp32(reference):
    config, weights, t = reference
    model = GLM(GLMConfig(**config, rotary_fp16_tables=True)).eval()
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        out = model(t["batch/tokens"], t["batch/position_ids"], t["batch/attention_mask"])
    diff = (out - t["batch/logits"]).abs().max()
    assert 0 < diff < 1e-3  # rounded angles: not the same numbers, nearly the same function


# ---------------------------------------------------------------- a slow, obvious re-computation

def slow_logits(sd, cfg: GLMConfig, tokens, positions, blocked):
    """One sample, float64, loops over heads and positions, straight from reference §1."""
    sd = {k: v.double() for k, v in sd.items()}
    d, heads, inner = cfg.head_dim, cfg.num_attention_heads, cfg.inner_hidden_size
    alpha = math.sqrt(2 * cfg.num_layers)

    def ln(x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg.layernorm_epsilon) * sd[prefix + ".weight"] \
            + sd[prefix + ".bias"]

    def rope(vec, p):
        out = torch.empty_like(vec)
        for j in range(d // 2):
            a = p * (1.0 / 10000 ** (2 * j / d))
            x1, x2 = vec[j], vec[j + d // 2]
            out[j] = x1 * math.cos(a) - x2 * math.sin(a)
            out[j + d // 2] = x2 * math.cos(a) + x1 * math.sin(a)
        return out

    emb = sd["transformer.word_embeddings.weight"]
    h = emb[tokens]
    s = len(tokens)
    for i in range(cfg.num_layers):
        p = f"transformer.layers.{i}."
        x = ln(h, p + "input_layernorm")
        qkv = (x @ sd[p + "attention.query_key_value.weight"].T
               + sd[p + "attention.query_key_value.bias"])
        ctx = []
        for head in range(heads):
            base = head * 3 * d
            q = torch.stack([rope(qkv[t, base:base + d], positions[t].item()) for t in range(s)])
            k = torch.stack([rope(qkv[t, base + d:base + 2 * d], positions[t].item())
                             for t in range(s)])
            v = qkv[:, base + 2 * d:base + 3 * d]
            scores = (q @ k.T / math.sqrt(d)).masked_fill(blocked, float("-inf"))
            ctx.append(torch.softmax(scores, -1) @ v)
        attn = (torch.cat(ctx, -1) @ sd[p + "attention.dense.weight"].T
                + sd[p + "attention.dense.bias"])
        y = ln(alpha * x + attn, p + "post_attention_layernorm")
        u = y @ sd[p + "mlp.dense_h_to_4h.weight"].T + sd[p + "mlp.dense_h_to_4h.bias"]
        x1, x2 = u[:, :inner], u[:, inner:]
        gelu = 0.5 * x2 * (1 + torch.erf(x2 / math.sqrt(2)))
        mlp = (x1 * gelu) @ sd[p + "mlp.dense_4h_to_h.weight"].T + sd[p + "mlp.dense_4h_to_h.bias"]
        h = alpha * y + mlp
    return ln(h, "transformer.final_layernorm") @ emb.T


def test_forward_equals_slow_recomputation_from_the_formulas():
    cfg = GLMConfig(**TINY)
    model = randomized(cfg)
    tokens, pos, mask = glm_batch()
    with torch.no_grad():
        logits = model(tokens, pos, mask).double()
    blocked = mask.dense()
    for b in range(2):
        expected = slow_logits(model.state_dict(), cfg, tokens[b], pos[b], blocked[b, 0])
        assert (logits[b] - expected).abs().max() < 1e-4 * expected.abs().max()


# ---------------------------------------------------------------- equivalent paths

def test_sdpa_path_equals_reference_path_forward_and_backward():
    cfg = GLMConfig(**TINY)
    outs, grads = [], []
    for impl in ("reference", "sdpa"):
        model = randomized(GLMConfig(**{**TINY, "attention_impl": impl}))
        tokens, pos, mask = glm_batch()
        logits = model(tokens, pos, mask)
        logits.logsumexp(-1).sum().backward()
        outs.append(logits.detach())
        grads.append(model.transformer.layers[0].attention.query_key_value.weight.grad)
    assert (outs[0] - outs[1]).abs().max() < 1e-5 * outs[0].abs().max()
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    assert cfg.attention_impl == "reference"


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_cached_decoding_equals_full_recomputation(impl):
    model = randomized(GLMConfig(**{**TINY, "attention_impl": impl}))
    tokens, pos, mask = glm_batch(seq_len=14, context=8, mask_pos=5)
    with torch.no_grad():
        full = model(tokens, pos, mask)
        cache = KVCache()
        # context and sop in one call, then one token at a time, one mask for the whole run
        steps = [model(tokens[:, :9], pos[:, :9], mask, kv_cache=cache)]
        for t in range(9, 14):
            steps.append(model(tokens[:, t:t + 1], pos[:, t:t + 1], mask, kv_cache=cache))
    cached = torch.cat(steps, dim=1)
    assert len(cache) == 14
    assert (cached - full).abs().max() < 1e-5 * full.abs().max()


def test_kv_cache_reorder_follows_beams():
    model = randomized(GLMConfig(**TINY))
    tokens, pos, mask = glm_batch()
    with torch.no_grad():
        cache = KVCache()
        model(tokens[:, :9], pos[:, :9], mask, kv_cache=cache)
        cache.reorder(torch.tensor([1, 1]))
        step = model(tokens[[1, 1], 9:10], pos[[1, 1], 9:10], mask, kv_cache=cache)
        full = model(tokens[[1]], pos[[1]], AttentionMask(mask.context[[1]]))
    assert torch.allclose(step[0, 0], full[0, 9], atol=1e-5) and torch.equal(step[0], step[1])


def test_default_mask_is_causal_and_positions_count_from_the_cache():
    model = randomized(GLMConfig(**TINY))
    tokens = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        causal = model(tokens, attention_mask=AttentionMask.from_context_lengths(0, 6))
        assert torch.equal(model(tokens), causal)
        cache = KVCache()
        model(tokens[:, :4], kv_cache=cache)
        assert torch.allclose(model(tokens[:, 4:], kv_cache=cache), causal[:, 4:], atol=1e-5)


def test_embedding_gradient_shrink_scales_gradient_not_value():
    """With the tied head, the embedding's gradient is G_in (input lookup) + G_out (logits):
    alpha scales G_in, and with --shrink-logit-embedding-gradient G_out too; values and every
    other gradient stay as they were."""
    runs = {}
    for alpha, logit in ((1.0, False), (0.1, False), (0.1, True)):
        cfg = GLMConfig(**{**TINY, "shrink_embedding_gradient_alpha": alpha,
                           "shrink_logit_embedding_gradient": logit})
        model = randomized(cfg).train()
        tokens, pos, mask = glm_batch()
        logits = model(tokens, pos, mask)
        logits.logsumexp(-1).sum().backward()
        runs[alpha, logit] = (logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    emb = "transformer.word_embeddings.weight"
    (l1, g1), (l2, g2), (l3, g3) = runs.values()
    assert torch.equal(l1, l2) and torch.equal(l1, l3)
    g_in = (g1[emb] - g2[emb]) / 0.9
    assert g_in.abs().max() > 1e-3
    assert torch.allclose(g2[emb], g1[emb] - 0.9 * g_in, atol=1e-5)
    assert torch.allclose(g3[emb], 0.1 * g1[emb], atol=1e-5)
    for name in g1:
        if name != emb:
            assert torch.equal(g1[name], g2[name]) and torch.equal(g1[name], g3[name])
    with torch.no_grad():  # inference never shrinks
        assert torch.equal(randomized(cfg).eval()(tokens, pos, mask),
                           randomized(GLMConfig(**TINY)).eval()(tokens, pos, mask))


def test_dropout_only_in_training():
    cfg = GLMConfig(**{**TINY, "hidden_dropout": 0.5, "attention_dropout": 0.5})
    model = randomized(cfg)
    tokens, pos, mask = glm_batch()
    with torch.no_grad():
        assert torch.equal(model(tokens, pos, mask), model(tokens, pos, mask))
        model.train()
        assert not torch.equal(model(tokens, pos, mask), model(tokens, pos, mask))


def test_mask_forms_and_errors():
    model = randomized(GLMConfig(**TINY))
    tokens, pos, mask = glm_batch()
    with pytest.raises(TypeError, match="bool"):
        model(tokens, pos, mask.dense().float())
    with pytest.raises(ValueError, match="3 rows for a batch of 2"):
        model(tokens, pos, AttentionMask.from_context_lengths(2, 12, batch_size=3))
    with pytest.raises(ValueError, match="covers 5 tokens"):
        model(tokens, pos, AttentionMask.from_context_lengths(2, 5, batch_size=2))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_stays_close_to_the_reference(reference, dtype, tol):
    config, weights, t = reference
    model = GLM(GLMConfig(**config)).eval()
    model.load_state_dict(weights, strict=False)
    model.to(dtype)
    with torch.no_grad():
        out = model(t["batch/tokens"], t["batch/position_ids"], t["batch/attention_mask"])
    assert out.dtype == dtype
    assert (out.float() - t["batch/logits"]).abs().max() < tol
    assert torch.equal(out.float().argmax(-1), t["batch/logits"].argmax(-1))


def test_fully_blocked_padding_rows_stay_finite_and_leave_real_rows_alone():
    """Batches are padded with rows/columns that nothing may see (reference §7.4)."""
    tokens, pos, mask = glm_batch()
    blocked = mask.dense().clone()
    blocked[:, :, :, 10:] = True  # the last two tokens are padding: no one sees them ...
    blocked[:, :, 10:, :] = True  # ... and they see nothing
    outs = []
    for impl in ("reference", "sdpa"):
        model = randomized(GLMConfig(**{**TINY, "attention_impl": impl}))
        with torch.no_grad():
            outs.append(model(tokens, pos, blocked))
        assert torch.isfinite(outs[-1]).all()
    with torch.no_grad():
        unpadded = randomized(GLMConfig(**TINY))(tokens[:, :10], pos[:, :10],
                                                 AttentionMask.from_context_lengths(8, 10, 2))
    for out in outs:
        assert (out[:, :10] - unpadded).abs().max() < 1e-5 * unpadded.abs().max()
