"""Weight-only INT8 / INT4: the packing and rounding worked by hand, quantised layers equal to
the matmul with their dequantised weight, quantised checkpoints, closeness to FP32, TP=2
against TP=1, the fused kernel against the pure path (GPU), and the memory planner."""
import argparse
import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from glm130b import GLM, AttentionMask, GLMConfig, load_checkpoint, save_checkpoint
from glm130b.errors import UsageError
from glm130b.parallel import (ColumnParallelLinear, RowParallelLinear, destroy_model_parallel,
                              initialize_model_parallel, shard)
from glm130b.quantization import (QuantizedColumnParallelLinear, QuantizedRowParallelLinear,
                                  add_quantization_args, check_quantization_args,
                                  cpu_int8_available, cpu_int8_matmul, dequantize_weight,
                                  fused_available, fused_matmul, pack_int4, pure_matmul,
                                  quantize_linear, quantize_model, quantize_state_dict,
                                  quantize_weight, quantized_matmul, unpack_int4)
from glm130b.tools.memory import (activation_bytes_per_gpu, kv_cache_bytes_per_gpu,
                                  weight_bytes_per_gpu)

SMALL = GLMConfig(num_layers=2, hidden_size=32, num_attention_heads=4, inner_hidden_size=48,
                  vocab_size=64, max_sequence_length=32, hidden_dropout=0.0, attention_dropout=0.0)
BIG_FOUR = ("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h")


def signed_byte(v: int) -> int:
    return v - 256 if v > 127 else v


def unpack_by_hand(packed: torch.Tensor) -> torch.Tensor:
    """Reference §5 in Python integers: high = byte >> 4, low = (byte << 4) >> 4 (8-bit)."""
    rows = []
    for row in packed.tolist():
        values = []
        for byte in row:
            values += [byte >> 4, signed_byte((byte << 4) & 0xFF) >> 4]
        rows.append(values)
    return torch.tensor(rows, dtype=torch.int8)


def random_biases(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and "layernorm" not in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def build(config=SMALL, seed=0):
    torch.manual_seed(seed)
    return random_biases(GLM(config).eval())


def batch(vocab=64, seq=10):
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, vocab, (2, seq), generator=g)
    pos = torch.arange(seq).repeat(2, 1)
    pos[1, 6:] = 4
    return tokens, pos, AttentionMask.from_context_lengths([6, 6], seq, batch_size=2)


def logits(model, *inputs):
    with torch.no_grad():
        return model(*(inputs or batch()))


# --- packing and rounding -------------------------------------------------------------------

def test_int4_packing_puts_even_columns_in_the_high_nibble():
    assert pack_int4(torch.tensor([[1, -2, -1, 3, -7, 7, 7, -7]], dtype=torch.int8)).tolist() \
        == [[0x1E, signed_byte(0xF3), signed_byte(0x97), 0x79]]
    values = torch.arange(-7, 8, dtype=torch.int8)
    pairs = torch.cartesian_prod(values, values).reshape(15, 30)  # every (even, odd) pair
    packed = pack_int4(pairs)
    assert packed.shape == (15, 15) and packed.dtype == torch.int8
    expected = [[signed_byte(((a & 0xF) << 4) | (b & 0xF)) for a, b in zip(r[::2], r[1::2])]
                for r in pairs.tolist()]
    assert packed.tolist() == expected
    assert torch.equal(unpack_int4(packed), pairs)
    assert torch.equal(unpack_by_hand(packed), pairs)
    with pytest.raises(ValueError, match="odd"):
        pack_int4(torch.zeros(2, 3, dtype=torch.int8))


def test_absmax_row_rounding_worked_by_hand():
    w = torch.tensor([[1.4, -0.45, 0.33, 0.0], [-3.5, 1.2, 0.0, 0.61], [0.0, 0.0, 0.0, 0.0]])
    q8, s8 = quantize_weight(w, 8)
    assert torch.allclose(s8, torch.tensor([1.4 / 127, 3.5 / 127, 0.0]))
    assert q8.tolist() == [[127, -41, 30, 0], [-127, 44, 0, 22], [0, 0, 0, 0]]
    q4, s4 = quantize_weight(w, 4)
    assert torch.allclose(s4, torch.tensor([0.2, 0.5, 0.0]))
    assert unpack_int4(q4).tolist() == [[7, -2, 2, 0], [-7, 2, 0, 1], [0, 0, 0, 0]]
    assert q4.tolist() == [[0x7E, 0x20], [signed_byte(0x92), 0x01], [0, 0]]
    # a random weight: every element within half a step of its row's scale
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    for bits in (4, 8):
        q, s = quantize_weight(w, bits)
        deq = (unpack_int4(q) if bits == 4 else q).float() * s[:, None]
        assert ((w - deq).abs() <= s[:, None] / 2 * (1 + 1e-5)).all()
        assert ((w - deq).abs() > s[:, None] / 4).any()  # the grid is coarse, as it should be


# --- layers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantised_linear_equals_the_matmul_with_its_dequantised_weight(bits, dtype):
    torch.manual_seed(0)
    column, row = ColumnParallelLinear(48, 40), RowParallelLinear(48, 40)
    for layer in (column, row):
        torch.nn.init.normal_(layer.bias)
        layer.to(dtype)
    x = torch.randn(3, 5, 48, dtype=dtype, requires_grad=True)
    for layer, kind in ((column, QuantizedColumnParallelLinear), (row, QuantizedRowParallelLinear)):
        q = quantize_linear(layer, bits)
        assert isinstance(q, kind) and q.weight.dtype == torch.int8
        assert q.weight_scale.dtype == dtype
        assert not q.weight.requires_grad and not q.weight_scale.requires_grad
        ints = unpack_by_hand(q.weight) if bits == 4 else q.weight
        w = ints.to(dtype) * q.weight_scale[:, None]
        # column-parallel: bias inside the matmul; row-parallel: added after the (TP) sum
        expected = (F.linear(x, w, layer.bias) if kind is QuantizedColumnParallelLinear
                    else F.linear(x, w) + layer.bias)
        assert torch.equal(q(x), expected)
        tol = 0.01 if bits == 8 else 0.15
        assert (q(x) - layer(x)).abs().max() < tol * layer(x).abs().max()
        # frozen weights, but the input gradient is defined (dequantise and matmul)
        x.grad = None
        q(x).sum().backward()
        assert torch.allclose(x.grad.float(), w.float().sum(0).expand(3, 5, 48), atol=1e-2)


def test_quantise_model_replaces_only_the_four_big_matrices():
    fp = build(GLMConfig.from_preset("glm-tiny"))
    for bits in (4, 8):
        q = quantize_model(copy.deepcopy(fp), bits)
        for layer in q.transformer.layers:
            assert isinstance(layer.attention.query_key_value, QuantizedColumnParallelLinear)
            assert isinstance(layer.mlp.dense_h_to_4h, QuantizedColumnParallelLinear)
            assert isinstance(layer.attention.dense, QuantizedRowParallelLinear)
            assert isinstance(layer.mlp.dense_4h_to_h, QuantizedRowParallelLinear)
        state, fp_state = q.state_dict(), fp.state_dict()
        big = {f"transformer.layers.{i}.{n}.weight" for i in range(4) for n in BIG_FOUR}
        assert set(state) == set(fp_state) | {k + "_scale" for k in big}
        for key, tensor in fp_state.items():
            if key not in big:  # embedding, LayerNorms, biases: untouched
                assert torch.equal(state[key], tensor)
        glu = state["transformer.layers.0.mlp.dense_h_to_4h.weight"]
        assert glu.shape == (2 * 682, 256 * bits // 8) and glu.dtype == torch.int8
        # the checkpoint conversion computes exactly what quantising the model does
        converted = quantize_state_dict(fp_state, bits)
        assert converted.keys() == state.keys()
        assert all(torch.equal(converted[k], state[k]) for k in state)
        with pytest.raises(TypeError, match="already quantised"):
            quantize_model(q, bits)
        with pytest.raises(ValueError, match="already quantised"):
            quantize_state_dict(converted, bits)


# --- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 8])
def test_quantised_checkpoint_loads_into_a_meta_model_quantised_first(tmp_path, bits):
    fp = build()
    quantized = quantize_model(copy.deepcopy(fp), bits)
    save_checkpoint(quantized, tmp_path / "saved")
    save_checkpoint(quantize_state_dict(fp.state_dict(), bits), tmp_path / "converted")
    raw = torch.load(tmp_path / "saved" / "release" / "mp_rank_00_model_states.pt",
                     weights_only=True)["module"]
    key = "transformer.layers.1.attention.dense.weight"
    assert raw[key].dtype == torch.int8 and raw[key + "_scale"].shape == (32,)
    expected = logits(quantized)
    for folder in ("saved", "converted"):
        with torch.device("meta"):  # --from-quantized-checkpoint: quantise first, then load
            model = quantize_model(GLM(SMALL), bits)
        load_checkpoint(model, tmp_path / folder)
        assert not any(p.is_meta for p in model.parameters())
        qkv = model.transformer.layers[0].attention.query_key_value
        assert qkv.weight.partition_dim == 0 and not qkv.weight.requires_grad
        assert torch.equal(logits(model.eval()), expected)
    # an FP checkpoint: load, then quantise (the other order of reference §5)
    save_checkpoint(fp, tmp_path / "fp")
    with torch.device("meta"):
        model = GLM(SMALL)
    load_checkpoint(model, tmp_path / "fp")
    assert torch.equal(logits(quantize_model(model, bits).eval()), expected)
    # the compute dtype: the scales follow .to(dtype), the integers stay integers
    half = quantized.to(torch.bfloat16)
    assert half.transformer.layers[0].mlp.dense_4h_to_h.weight.dtype == torch.int8
    assert half.transformer.layers[0].mlp.dense_4h_to_h.weight_scale.dtype == torch.bfloat16


# --- accuracy -------------------------------------------------------------------------------

def test_int8_and_int4_logits_stay_close_to_fp32():
    """glm-tiny at random init. Its logits are dominated by the tied embedding (the residual
    stream carries the input token through), so top-1 agreement alone would pass with every
    linear layer removed; the telling number is how far quantisation moves the logits compared
    with how far removing the four quantised matrices moves them."""
    fp = build(GLMConfig.from_preset("glm-tiny", hidden_dropout=0.0, attention_dropout=0.0))
    tokens = torch.randint(0, 4096, (2, 128), generator=torch.Generator().manual_seed(1))
    ref = logits(fp, tokens)
    removed = copy.deepcopy(fp)
    with torch.no_grad():
        for layer in removed.transformer.layers:
            for name in BIG_FOUR:
                layer.get_submodule(name).weight.zero_()
    contribution = (logits(removed, tokens) - ref).norm()
    report = {}
    for bits in (8, 4):
        out = logits(quantize_model(copy.deepcopy(fp), bits), tokens)
        diff = (out - ref).abs()
        report[bits] = dict(max=diff.max().item(), mean=diff.mean().item(),
                            top1=(out.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                            relative=((out - ref).norm() / contribution).item())
        print(f"INT{bits} vs FP32: max |diff| {report[bits]['max']:.2e}, mean "
              f"{report[bits]['mean']:.2e}, top-1 agreement {report[bits]['top1']:.3f}, moved "
              f"{report[bits]['relative']:.3f} of the quantised layers' contribution")
    assert report[8]["relative"] < 0.03 and report[4]["relative"] < 0.4
    assert report[8]["top1"] >= 0.99 and report[4]["top1"] >= 0.95
    assert report[8]["max"] < report[4]["max"] / 5  # 127 levels against 7


# --- tensor parallel ------------------------------------------------------------------------

def plant_equal_halves(model):
    """Give every row of the row-parallel matrices the same absmax in both input halves, so a
    TP=2 rank's per-row scale equals the TP=1 scale and TP=2 quantised must equal TP=1
    quantised exactly."""
    with torch.no_grad():
        for layer in model.transformer.layers:
            for w in (layer.attention.dense.weight, layer.mlp.dense_4h_to_h.weight):
                peak = 1.5 * w.abs().amax(dim=1)
                w[:, 0], w[:, w.shape[1] // 2] = peak, -peak
    return model


def local_piece(full, param):
    if not getattr(param, "tensor_model_parallel", False):
        return full
    return shard(full, param.partition_dim, param.partition_stride)


def tp_worker(rank, world, init_file, ckpt_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fp, planted = build(), plant_equal_halves(build())
        single = {bits: quantize_model(copy.deepcopy(planted), bits) for bits in (4, 8)}
        single_logits = {bits: logits(m) for bits, m in single.items()}  # before the groups
        initialize_model_parallel(world)
        for bits in (4, 8):
            # any weights: column-parallel shards are the TP=1 quantisation sliced; row-parallel
            # shards are the quantisation of the rank's slice, with their own scales
            model, ref = quantize_model(build(), bits), quantize_model(copy.deepcopy(fp), bits)
            own_scales = False
            for i, layer in enumerate(model.transformer.layers):
                for name in BIG_FOUR:
                    mine = layer.get_submodule(name)
                    full = ref.transformer.layers[i].get_submodule(name)
                    if isinstance(mine, QuantizedColumnParallelLinear):
                        assert torch.equal(mine.weight, local_piece(full.weight, mine.weight))
                        assert torch.equal(mine.weight_scale, local_piece(full.weight_scale,
                                                                          mine.weight_scale))
                    else:
                        fp_weight = fp.transformer.layers[i].get_submodule(name).weight.detach()
                        q, s = quantize_weight(shard(fp_weight, 1), bits)
                        assert torch.equal(mine.weight, q) and torch.equal(mine.weight_scale, s)
                        own_scales |= not torch.equal(s, full.weight_scale)
            assert own_scales, "row-parallel scales should depend on the shard"

            # planted weights: TP=2 quantised equals TP=1 quantised, parameters and logits
            model = build()
            with torch.no_grad():
                ref_params = dict(planted.named_parameters())
                for name, p in model.named_parameters():
                    p.copy_(local_piece(ref_params[name].detach(), p))
            quantize_model(model, bits)
            for name, p in model.named_parameters():
                whole = dict(single[bits].named_parameters())[name]
                assert torch.equal(p, local_piece(whole, p)), name
            out = logits(model)
            assert (out - single_logits[bits]).abs().max() < 1e-5, "TP=2 logits differ"

            # a sharded quantised checkpoint loads back into a TP=2 meta model quantised first
            save_checkpoint(model, f"{ckpt_dir}/int{bits}")
            dist.barrier()
            with torch.device("meta"):
                loaded = quantize_model(GLM(SMALL), bits)
            load_checkpoint(loaded, f"{ckpt_dir}/int{bits}")
            assert torch.equal(logits(loaded.eval()), out)
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


@pytest.mark.slow
def test_tp2_quantised_equals_tp1_quantised(tmp_path):
    mp.spawn(tp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "ckpt")), nprocs=2)
    shards = sorted(p.name for p in (tmp_path / "ckpt" / "int4" / "release").iterdir())
    assert shards == ["mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt"]


# --- the fused kernel -----------------------------------------------------------------------

SHAPES = [(1, 96, 256), (5, 130, 130), (70, 64, 512)]  # (tokens, out, in): decode and prefill


def test_pure_path_is_chosen_on_cpu():
    q, s = quantize_weight(torch.randn(8, 16), 4)
    x = torch.randn(2, 16)
    assert not fused_available(x)
    assert torch.equal(quantized_matmul(x, q, s, 4), pure_matmul(x, q, s, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens, out, inp", [(1, 96, 256), (5, 130, 144), (70, 64, 512)])
def test_cpu_int8_kernel_matches_the_pure_path_and_is_chosen_for_bf16(tokens, out, inp, dtype):
    g = torch.Generator().manual_seed(tokens)
    q, s = quantize_weight(torch.randn(out, inp, generator=g), 8)
    s = s.to(dtype)
    x = torch.randn(3, tokens, inp, generator=g).to(dtype)
    bias = torch.randn(out, generator=g).to(dtype)
    w = dequantize_weight(q, s, 8).double()
    exact = F.linear(x.double(), w, bias.double())
    pure, fused = pure_matmul(x, q, s, 8, bias), cpu_int8_matmul(x, q, s, bias)
    # Rounding in `dtype`, in each path's own summation order: a few ulps of the sum of |terms|.
    scale = (F.linear(x.double().abs(), w.abs()) + bias.double().abs()).max()
    tolerance = 4 * torch.finfo(dtype).eps * scale.item()
    assert (fused.double() - exact).abs().max() <= tolerance
    assert (pure.double() - exact).abs().max() <= tolerance
    assert not cpu_int8_available(x, 4)
    chosen = fused if dtype == torch.bfloat16 else pure  # its fp32 variant is slow: not used
    assert cpu_int8_available(x, 8) == (dtype == torch.bfloat16)
    assert torch.equal(quantized_matmul(x, q, s, 8, bias), chosen)
    with torch.enable_grad():  # a gradient through x takes the differentiable pure path
        leaf = x.clone().requires_grad_()
        assert torch.equal(quantized_matmul(leaf, q, s, 8, bias).detach(), pure)
    odd = torch.randn(2, 136, dtype=dtype)  # a width the kernel cannot take: the pure path
    q, s = quantize_weight(torch.randn(out, 136, generator=g), 8)
    assert not cpu_int8_available(odd, 8)
    assert torch.equal(quantized_matmul(odd, q, s.to(dtype), 8),
                       pure_matmul(odd, q, s.to(dtype), 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernel runs on CUDA")
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_kernel_matches_the_pure_path_on_gpu(bits, dtype):
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(0)
    for m, n, k in SHAPES:
        q, s = quantize_weight(torch.randn(n, k, generator=g), bits)
        q, s = q.cuda(), s.to("cuda", dtype)
        x = torch.randn(m, k, generator=g).to("cuda", dtype)
        assert fused_available(x)
        exact = x.double() @ (pure_matmul(torch.eye(k, device="cuda", dtype=dtype), q, s, bits)
                              .double())
        for y in (fused_matmul(x, q, s, bits), pure_matmul(x, q, s, bits),
                  quantized_matmul(x, q, s, bits)):
            assert torch.allclose(y.double(), exact, rtol=2e-2, atol=2e-2 * exact.abs().max())


def test_fused_kernel_logic_in_the_triton_interpreter():
    """Where Triton is installed but no GPU is, its interpreter runs the kernel on the CPU."""
    pytest.importorskip("triton")
    script = textwrap.dedent(f"""
        import torch
        from glm130b.quantization import pure_matmul, quantize_weight, triton_matmul
        g = torch.Generator().manual_seed(0)
        for bits in (4, 8):
            for m, n, k in {SHAPES}:
                q, s = quantize_weight(torch.randn(n, k, generator=g), bits)
                x = torch.randn(m, k, generator=g, dtype=torch.float16)
                y = triton_matmul.matmul(x, q, s.half(), bits).double()
                ref = x.double() @ pure_matmul(torch.eye(k), q, s, bits).double()
                assert (y - ref).abs().max() < 1e-2 * ref.abs().max(), (bits, m, n, k)
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


# --- the memory planner ---------------------------------------------------------------------

def hand_counted_weight_bytes(bits, tp, item=2):
    """GLM-130B by hand: the four matrices at bits/8 bytes, split; QKV and h_to_4h scales and
    biases split; row-parallel scales, biases and LayerNorms whole on every rank."""
    h, inner, v, layers = 12288, 32768, 150528, 70
    matrices = 3 * h * h + h * h + 2 * inner * h + inner * h
    split_rows = 3 * h + 2 * inner
    per_layer = matrices * bits // 8 // tp + item * (2 * split_rows // tp + 2 * h + 2 * h + 4 * h)
    return layers * per_layer + item * (v * h // tp + 2 * h)


def test_planner_weights_for_glm130b_match_the_reference():
    cfg = GLMConfig.from_preset("glm-130b")
    for bits in (4, 8):
        for tp in (1, 4, 8):
            assert (weight_bytes_per_gpu(cfg, tp, torch.float16, bits)
                    == hand_counted_weight_bytes(bits, tp))
    fp16 = weight_bytes_per_gpu(cfg, 1, torch.float16)
    int8, int4 = (weight_bytes_per_gpu(cfg, 1, torch.float16, bits) for bits in (8, 4))
    # reference §5: FP16 ≈ 257 GB, INT8 ≈ 130 GB, INT4 ≈ 70 GB (its own count: 63.4 GB packed
    # + 3.7 GB embedding and the rest ≈ 67 GB); these are GB of 1e9 bytes
    assert [round(b / 1e9, 1) for b in (fp16, int8, int4)] == [257.4, 130.6, 67.2]
    assert round(fp16 / 2**30, 1) == 239.7  # the "240 GiB" of the download


def test_planner_cache_and_activations_worked_by_hand():
    cfg = GLMConfig.from_preset("glm-130b")
    # 2 (K, V) x 70 layers x 12288/4 features x 2048 tokens x 2 bytes
    assert kv_cache_bytes_per_gpu(cfg, 4, 1, 2048, torch.float16) == 2 * 70 * 3072 * 2048 * 2
    stream = 2 * 2048 * 12288 * 2
    attention = 6 * 2048 * 3072 * 2 + 3 * 24 * 2048 * 2048 * 4  # fp32 scores dominate
    dequantized = 2 * 32768 * 12288 // 4 * 2
    assert (activation_bytes_per_gpu(cfg, 4, 1, 2048, torch.float16, 4)
            == stream + attention + dequantized)
    assert activation_bytes_per_gpu(cfg, 4, 1, 2048, torch.float16) == stream + attention


@pytest.mark.slow
def test_planner_cli_answers_whether_130b_fits_four_24gb_cards_in_int4():
    def run(*a):
        return subprocess.run([sys.executable, "-m", "glm130b.tools.memory", *a],
                              capture_output=True, text=True)

    out = run("--preset", "glm-130b", "--tp", "4", "--bits", "4", "--batch", "1", "--seq", "2048")
    assert out.returncode == 0, out.stderr
    assert "weights per GPU at TP=4 in INT4 (fp16 elsewhere): 16.8 GB" in out.stdout
    assert "key/value cache, batch 1 x 2048 tokens: 1.8 GB" in out.stdout
    assert "fits a 24 GB GPU: yes" in out.stdout and "fits a 11 GB GPU: no" in out.stdout
    out = run("--preset", "glm-130b", "--tp", "8", "--gpu-memory", "24")
    assert "fits a 24 GB GPU: no" in out.stdout and "32.2 GB" in out.stdout
    out = run("--preset", "glm-130b", "--tp", "7")
    assert out.returncode == 1 and out.stderr.strip() == "error: a dimension of 36864 does " \
                                                         "not split over 7 ranks"


def test_quantization_flags():
    parser = add_quantization_args(argparse.ArgumentParser())
    parser.add_argument("--load")
    args = parser.parse_args(["--quantization-bit-width", "4", "--from-quantized-checkpoint",
                              "--load", "ckpt"])
    assert args.quantization_bit_width == 4 and args.from_quantized_checkpoint
    check_quantization_args(4, True, "ckpt")
    with pytest.raises(UsageError, match="needs --quantization-bit-width"):
        check_quantization_args(None, True, "c")
    with pytest.raises(UsageError, match="needs --load"):
        check_quantization_args(8, True, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--quantization-bit-width", "3"])
