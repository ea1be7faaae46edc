"""The blank-infilling objectives, the mixture sampler and collation, against the reference's
rules (§2.6, §8.3, §8.4): layouts worked by hand, statistics over many draws, resumption,
and a collated batch through the model."""
import argparse
import dataclasses
import math
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glm130b import GLM, GLMConfig
from glm130b.cli import config_from_args
from glm130b.training.collate import collate
from glm130b.data.corpus import generate_corpus
from glm130b.data.indexed import IndexedDataset, TokenFileWriter, TokenSamples
from glm130b.data.infilling import (MAX_SPAN, Infilling, InfillingConfig, blank_infill)
from glm130b.data.show import main as inspect_main
from glm130b.data.mixture import (DataConfig, InstructionPairs, MixtureSampler, Source,
                                  add_data_args, build_mixture, parse_data_path)
from glm130b.model.masks import position_ids as reference_positions

REPO = Path(__file__).resolve().parents[1]
# Chunks of 500 tokens never outgrow a 1000-token slot, so nothing is cut off.
UNCUT = InfillingConfig(seq_length=4000, length_per_sample=2000)
TINY = InfillingConfig(seq_length=256, length_per_sample=240)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def text_prefix(folder, tok):
    """The corpus as token files, each document followed by eod."""
    eod = tok.get_command("eod")
    with TokenFileWriter(folder / "text", tok.num_tokens) as out:
        for t in generate_corpus(400, 1):
            out.add(tok.tokenize(t) + [eod])
    return str(folder / "text")


@pytest.fixture(scope="module")
def mip_prefix(folder, tok):
    with TokenFileWriter(folder / "mip.input", tok.num_tokens) as inputs, \
            TokenFileWriter(folder / "mip.target", tok.num_tokens) as targets:
        for i in range(40):
            inputs.add(tok.tokenize(f"Question: what is {i} plus {i}? Answer:"))
            targets.add(tok.tokenize(str(2 * i)))
    return str(folder / "mip")


def random_text(tok, n, seed):
    """Distinct-looking text ids (no specials), so a misplaced token shows."""
    return np.random.default_rng(seed).integers(10, tok.num_text_tokens, size=n)


def segments(sample):
    start = 0
    for length, context in sample.segments:
        yield start, length, context
        start += length


def part_b_spans(tokens, context, length, sop):
    """(start, end) of each [sop]-led piece of Part B, in sequence order."""
    cuts = [i for i in range(context, length) if tokens[i] == sop] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


def reconstruct(sample, start, length, context, sop, eop):
    """The original chunk, from Part A with every [MASK] replaced by its Part B span: which span
    belongs to which mask is read from the position ids alone."""
    tokens = sample.tokens[start:start + length]
    targets = sample.targets[start:start + length]
    pos = sample.position_ids[start:start + length]
    fill = {}
    for a, b in part_b_spans(tokens, context, length, sop):
        assert len(set(pos[a:b].tolist())) == 1  # every token of a span at its mask's place
        assert targets[b - 1] == eop and (tokens[a + 1:b] == targets[a:b - 1]).all()
        fill[int(pos[a])] = targets[a:b - 1].tolist()
    out = []
    for i, t in enumerate(tokens[:context].tolist()):
        out.extend(fill.pop(i) if i in fill else [t])
    assert not fill  # every span pointed at a mask
    return out


# ---- layouts worked by hand -----------------------------------------------------------------

def test_blank_infill_layout_by_hand():
    # x = 10..17, spans [11 12] and [15], Part B in the order span 1, span 0;
    # [MASK]=90, sop=91, eop=92. Part A: 10 M 13 14 M 16 17 (the masks at 1 and 4).
    s = blank_infill(np.arange(10, 18), [(1, 3), (5, 6)], [1, 0], 90, 91, 92)
    assert s.tokens.tolist() == [10, 90, 13, 14, 90, 16, 17, 91, 15, 91, 11, 12]
    assert s.targets.tolist() == [10, 90, 13, 14, 90, 16, 17, 15, 92, 11, 12, 92]
    assert s.position_ids.tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 4, 1, 1, 1]
    assert s.loss_mask.tolist() == [0] * 7 + [1] * 5
    assert s.segments == [(12, 7)]


def test_mask_positions_agree_with_the_inference_contract():
    # One blank: the training sample must position tokens as generation will (§2.1).
    s = blank_infill(np.arange(10, 20), [(4, 7)], [0], 90, 91, 92)
    (length, context), = s.segments
    assert s.position_ids.tolist() == reference_positions(
        length, sop_index=context, mask_position=4).tolist()


def test_gmask_layout(tok):
    inf = Infilling(tok, InfillingConfig())
    x = random_text(tok, 2000, 0)
    s = inf.gmask(x, np.random.default_rng(3))
    (length, context), = s.segments
    cut = context - 1  # len(source)
    assert length == len(s) == 2001 and 400 <= 2000 - cut <= 2000
    assert s.tokens.tolist() == x[:cut].tolist() + [inf.gmask_id, inf.sop_id] + x[cut:-1].tolist()
    assert s.targets.tolist() == x[:cut].tolist() + [inf.gmask_id] + x[cut:].tolist()
    assert s.loss_mask.tolist() == [0] * context + [1] * (2000 - cut)
    assert s.position_ids.tolist() == reference_positions(2001).tolist() == list(range(2001))


def test_instruction_truncation_by_hand(tok):
    inf = Infilling(tok, InfillingConfig(seq_length=64, length_per_sample=60))  # slots of 16
    M, S, E = inf.mask_id, inf.sop_id, inf.eop_id
    text, short, long = np.arange(100, 120), np.arange(200, 203), np.arange(300, 330)
    s = inf.instruction([(text, short), (text, long), (text[:3], short)])
    # 20 + 3 + 2 > 16: the input keeps max(16/4, 16 - 3 - 2) = 11 tokens
    first = list(range(100, 111))
    # 20 + 30 + 2 > 16: the input keeps max(4, -16) = 4, the target 16 - 4 - 2 = 10
    second_in, second_tgt = list(range(100, 104)), list(range(300, 310))
    assert s.segments == [(16, 12), (16, 5), (8, 4)]
    assert s.tokens.tolist() == (first + [M, S, 200, 201, 202] + second_in + [M, S] + second_tgt
                                 + [100, 101, 102, M, S, 200, 201, 202])
    assert s.targets.tolist() == (first + [M, 200, 201, 202, E] + second_in + [M] + second_tgt
                                  + [E] + [100, 101, 102, M, 200, 201, 202, E])
    assert s.loss_mask.tolist() == [0] * 12 + [1] * 4 + [0] * 5 + [1] * 11 + [0] * 4 + [1] * 4
    assert s.position_ids.tolist() == list(range(16)) + list(range(16)) + list(range(8))


# ---- [MASK] statistics and faithfulness -----------------------------------------------------

def test_mask_ratio_span_lengths_and_reconstruction(tok):
    inf = Infilling(tok, UNCUT)
    sop, eop = inf.sop_id, inf.eop_id
    masked = total = 0
    span_lengths = []
    for k in range(150):
        x = random_text(tok, 2000, k)
        s = inf.mask(x, np.random.default_rng(k))
        chunks = []
        for start, length, context in segments(s):
            chunk = reconstruct(s, start, length, context, sop, eop)
            chunks.append(chunk)
            part_a = s.tokens[start:start + context]
            is_mask = part_a == inf.mask_id
            spans = [b - a - 1 for a, b in part_b_spans(s.tokens[start:], context, length, sop)]
            assert len(spans) == is_mask.sum() >= 1
            assert not (is_mask[1:] & is_mask[:-1]).any()  # spans at least one token apart
            assert sum(spans) >= int(0.15 * len(chunk)) or len(spans) == 1  # single span
            assert max(spans) <= MAX_SPAN
            assert (s.loss_mask[start:start + length] == (np.arange(length) >= context)).all()
            span_lengths += spans
            masked += sum(spans)
            total += len(chunk)
        # Chunks are consecutive pieces of the sample (some shortened, with prob 0.02).
        assert [len(c) for c in chunks] != [] and all(len(c) <= 500 for c in chunks)
        offset = 0
        for c in chunks:
            assert c == x[offset:offset + len(c)].tolist()
            offset += 500
    assert abs(masked / total - 0.15) < 0.01, masked / total
    pmf = [3 ** k / math.factorial(k) for k in range(1, MAX_SPAN + 1)]
    truncated_mean = sum(k * p for k, p in enumerate(pmf, 1)) / sum(pmf)  # 3.157
    assert abs(np.mean(span_lengths) - truncated_mean) < 0.1, np.mean(span_lengths)


def test_mask_chunks_are_cut_to_their_slot_as_the_reference_does(tok):
    # The same draws with 512-token slots give each segment's first 512 tokens of the uncut one.
    cut, uncut = Infilling(tok, InfillingConfig()), Infilling(tok, UNCUT)
    was_cut = 0
    for k in range(20):
        x = random_text(tok, 2000, k)
        a, b = cut.mask(x, np.random.default_rng(k)), uncut.mask(x, np.random.default_rng(k))
        assert len(a) <= 2048
        for (sa, la, ca), (sb, lb, cb) in zip(segments(a), segments(b)):
            assert la == min(lb, 512) and ca == cb
            was_cut += lb > 512
            for name in ("tokens", "targets", "loss_mask", "position_ids"):
                assert (getattr(a, name)[sa:sa + la] == getattr(b, name)[sb:sb + la]).all()
    assert was_cut > 0  # 500 tokens + 2 per span usually outgrow 512


def test_smask_masks_whole_sentences(tok, text_prefix):
    inf = Infilling(tok, UNCUT)
    samples = TokenSamples(IndexedDataset(text_prefix), 2000)
    ends = inf.sentence_end
    assert ends[tok.get_command("eod")] and all(ends[i] for i in tok.sentence_end_ids)
    for k in range(len(samples)):
        x = samples[k]
        s = inf.smask(x, np.random.default_rng(k))
        assert s.objective == "smask"
        for start, length, context in segments(s):
            chunk = reconstruct(s, start, length, context, inf.sop_id, inf.eop_id)
            part_a = s.tokens[start:start + context].tolist()
            assert inf.mask_id not in part_a and part_a.count(inf.smask_id) >= 1
            masked = 0
            for a, b in part_b_spans(s.tokens[start:], context, length, inf.sop_id):
                sentence = s.targets[start + a:start + b - 1]
                masked += len(sentence)
                # a whole sentence: it ends at a sentence end (or the chunk's end) and follows one
                place = [i for i in range(len(chunk) - len(sentence) + 1)
                         if chunk[i:i + len(sentence)] == sentence.tolist()]
                assert any((i == 0 or ends[chunk[i - 1]]) and
                           (i + len(sentence) == len(chunk) or ends[chunk[i + len(sentence) - 1]])
                           for i in place)
            assert masked >= int(0.15 * len(chunk))


def test_gmask_generation_lengths_are_uniform(tok):
    inf = Infilling(tok, InfillingConfig())
    x = random_text(tok, 50, 0)  # generation length uniform on 10..50: 41 values
    lengths = np.array([int(inf.gmask(x, np.random.default_rng(k)).loss_mask.sum())
                        for k in range(4100)])
    assert lengths.min() == 10 and lengths.max() == 50
    counts = np.bincount(lengths, minlength=51)[10:]
    chi2 = ((counts - 100) ** 2 / 100).sum()
    assert chi2 < 73.4, chi2  # 40 degrees of freedom, p = 0.001
    assert abs(lengths.mean() - 30) < 0.5


# ---- the mixture ----------------------------------------------------------------------------

def mixture(tok, text_prefix, mip_prefix, seed=1234, sent_prob=0.0):
    text = TokenSamples(IndexedDataset(text_prefix), TINY.length_per_sample)
    sources = [Source("text", text, 0.95), Source("mip", InstructionPairs(mip_prefix), 0.05)]
    return MixtureSampler(sources, Infilling(tok, TINY), seed, gpt_prob=0.7, sent_prob=sent_prob)


def same(a, b):
    return (a.objective == b.objective and a.segments == b.segments and
            all((getattr(a, n) == getattr(b, n)).all()
                for n in ("tokens", "targets", "loss_mask", "position_ids")))


def test_mixture_shares(tok, text_prefix, mip_prefix):
    sampler = mixture(tok, text_prefix, mip_prefix, sent_prob=0.1)
    objectives = [sampler[k].objective for k in range(3000)]
    share = {o: objectives.count(o) / len(objectives) for o in ("gmask", "mask", "smask", "mip")}
    assert abs(share["mip"] - 0.05) < 0.015
    text = 1 - share["mip"]
    assert abs(share["gmask"] / text - 0.7) < 0.03
    assert abs(share["mask"] / text - 0.2) < 0.03
    assert abs(share["smask"] / text - 0.1) < 0.02


def test_mixture_from_the_command_line_weights_sources(tok, text_prefix, mip_prefix):
    assert parse_data_path(["a"]) == [(None, "a")]
    assert parse_data_path(["1", "a", "3", "b"]) == [(1.0, "a"), (3.0, "b")]
    with pytest.raises(ValueError, match="WEIGHT PREFIX"):
        parse_data_path(["1", "a", "b"])
    args = add_data_args(argparse.ArgumentParser()).parse_args(
        ["--data-path", "1", text_prefix, "3", text_prefix, "--multitask-data-path", mip_prefix,
         "--seq-length", "256", "--length-per-sample", "240"])
    config = config_from_args(DataConfig, args, infilling=config_from_args(InfillingConfig, args))
    assert config == DataConfig(["1", text_prefix, "3", text_prefix], [mip_prefix],
                                infilling=TINY)
    sampler = build_mixture(config, tok, seed=1)
    assert [round(s.weight, 6) for s in sampler.sources] == [0.2375, 0.7125, 0.05]
    assert sampler.infilling.config == TINY and sampler.seed == 1
    text_only = dataclasses.replace(config, multitask_data_path=[])  # every sample is text
    assert [round(s.weight, 6) for s in build_mixture(text_only, tok, 1).sources] == [0.25, 0.75]


def test_mixture_same_seed_same_samples_and_resume_without_replay(tok, text_prefix, mip_prefix):
    first = mixture(tok, text_prefix, mip_prefix)
    run = list(islice(first.samples(), 40))
    # A fresh sampler asked for sample 33 first (nothing consumed before) gives the same one.
    resumed = mixture(tok, text_prefix, mip_prefix)
    assert all(same(a, b) for a, b in zip(islice(resumed.samples(start=33), 7), run[33:]))
    again = mixture(tok, text_prefix, mip_prefix)
    assert all(same(again[k], run[k]) for k in range(40))
    assert {s.objective for s in run} >= {"gmask", "mask"}
    assert not any(same(run[i], run[j]) for i in range(40) for j in range(i))  # no repeats
    other = mixture(tok, text_prefix, mip_prefix, seed=1235)
    assert sum(same(other[k], run[k]) for k in range(40)) < 5


# ---- collation and the model ----------------------------------------------------------------

def test_collated_mask_hides_part_b_and_padding(tok, text_prefix, mip_prefix):
    sampler = mixture(tok, text_prefix, mip_prefix)
    inf = sampler.infilling
    x = sampler.sources[0].dataset[0]
    rng = np.random.default_rng(0)
    batch_samples = [inf.gmask(x, rng), inf.mask(x, rng), inf.smask(x, rng),
                     inf.instruction([sampler.sources[1].dataset[i] for i in range(4)])]
    batch = collate(batch_samples, 256)
    blocked = batch.attention_mask.dense()[:, 0]
    for row, s in enumerate(batch_samples):
        n = len(s)
        assert (batch.tokens[row, n:] == 0).all() and (batch.targets[row, n:] == 0).all()
        assert (batch.position_ids[row, n:] == 0).all() and (batch.loss_mask[row, n:] == 0).all()
        assert blocked[row, :n, n:].all()  # no real token sees padding
        for start, length, context in segments(s):
            end = start + length
            a, b = slice(start, start + context), slice(start + context, end)
            assert not blocked[row, a, a].any()  # Part A: bidirectional
            assert blocked[row, a, b].all()  # Part A never sees Part B
            assert not blocked[row, b, a].any()  # Part B sees all of Part A
            causal = torch.ones(length - context, length - context, dtype=torch.bool).tril()
            assert torch.equal(~blocked[row, b, b], causal)
            assert blocked[row, start:end, :start].all() and blocked[row, start:end, end:].all()
            assert (batch.loss_mask[row, a] == 0).all() and (batch.loss_mask[row, b] == 1).all()
        assert torch.equal(batch.tokens[row, :n], torch.from_numpy(s.tokens))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = GLMConfig.from_preset("glm-tiny", num_layers=2, hidden_size=64,
                                   num_attention_heads=4, inner_hidden_size=160,
                                   vocab_size=1024, max_sequence_length=256)
    return GLM(config).eval()


def logits_of(model, batch):
    with torch.no_grad():
        return model(batch.tokens, position_ids=batch.position_ids,
                     attention_mask=batch.attention_mask)


def test_batch_runs_through_the_model_with_a_finite_loss(tok, text_prefix, mip_prefix, model):
    sampler = mixture(tok, text_prefix, mip_prefix)
    batch = collate([sampler[k] for k in range(6)], 256)
    logits = logits_of(model, batch)
    losses = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="none")
    loss = (losses * batch.loss_mask.flatten()).sum() / batch.loss_mask.sum()
    assert torch.isfinite(loss) and 0 < loss.item() < 2 * math.log(1024)


def test_packed_segments_and_padding_do_not_change_logits(tok, text_prefix, model):
    inf = Infilling(tok, TINY)
    x = TokenSamples(IndexedDataset(text_prefix), TINY.length_per_sample)[2]
    packed = inf.mask(x, np.random.default_rng(5))
    whole = logits_of(model, collate([packed], 256))[0]
    for start, length, context in segments(packed):
        alone = packed.__class__(*(getattr(packed, n)[start:start + length] for n in
                                   ("tokens", "targets", "loss_mask", "position_ids")),
                                 [(length, context)], "mask")
        for pad_to in (length, 100):
            own = logits_of(model, collate([alone], pad_to))[0, :length]
            assert torch.allclose(whole[start:start + length], own, atol=1e-5)


def test_inspect_prints_parts_positions_and_loss(tok_model, text_prefix, mip_prefix, capsys):
    common = ["--data-path", text_prefix, "--tokenizer-type", "sentencepiece",
              "--tokenizer-model", tok_model, "--seq-length", "256", "--length-per-sample",
              "240", "--index", "4"]
    assert inspect_main(common + ["--objective", "mask"]) == 0
    out = capsys.readouterr().out
    assert out.count("Part A   positions 0..") == 4 and out.count("Part B") >= 4
    assert "[MASK]" in out and "[sop]" in out and "[eop]" in out and "loss 0 x" in out
    inspect_main(common + ["--multitask-data-path", mip_prefix, "--objective", "mip"])
    assert "Question: what is" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "glm130b.data.show", "--data-path",
                             text_prefix + "-absent", "--tokenizer-type", "sentencepiece",
                             "--tokenizer-model", tok_model],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: token file not found")
    assert len(result.stderr.strip().splitlines()) == 1
