"""Generation (reference §2.1, §2.4, §6): strategies against hand-worked numbers, cached and
batched decoding against decoding without the cache and one prompt at a time, and blank filling
against the positions, masks and output assembly of the reference."""
import math

import pytest
import torch
from torch import nn

from glm130b.errors import PromptError
from glm130b.evaluation import GenerationTask, GenerationTaskConfig
from glm130b.evaluation.datasets import FileData, GenerationExample
from glm130b.generation import (BaseStrategy, BeamSearchStrategy, Filling, SamplingConfig, Shown,
                                batch_filling_sequence, blank_ids, build_prompt, build_strategy,
                                end_tokens, fill_blanks, settled, top_k_top_p_filter)
from glm130b.generation.filling import styled
from glm130b.model.masks import dense_mask
from helpers import grow_cache, CONTEXTS, MASK_POSITIONS, Favouring, byte_pieces, lively_model

pytestmark = pytest.mark.usefixtures("one_thread")



# ---- filters and sampling -------------------------------------------------------------------

def test_top_p_filters_each_row_of_a_batch_on_its_own():
    probs = torch.tensor([[0.50, 0.30, 0.15, 0.05],    # cumulative 0.5, 0.8 -> keeps 0, 1
                          [0.10, 0.60, 0.05, 0.25],    # sorted 1, 3 (0.6, 0.85) -> keeps 1, 3
                          [0.25, 0.25, 0.25, 0.25]])   # 0.25, 0.5, 0.75 -> keeps three
    kept = top_k_top_p_filter(probs.log(), top_p=0.7) > -60000
    assert kept.tolist() == [[True, True, False, False], [False, True, False, True],
                             [True, True, True, False]]
    # the filtered rows renormalise to the kept probabilities
    filtered = top_k_top_p_filter(probs.log(), top_p=0.7).softmax(-1)
    assert torch.allclose(filtered[1], torch.tensor([0, 0.6 / 0.85, 0, 0.25 / 0.85]), atol=1e-6)
    # top-k per row, then top-p on what is left
    both = top_k_top_p_filter(probs[:2].log(), top_k=1, top_p=0.7) > -60000
    assert both.tolist() == [[True, False, False, False], [False, True, False, False]]


def test_base_strategy_samples_each_row_from_its_own_nucleus():
    probs = torch.tensor([[0.50, 0.30, 0.15, 0.05], [0.10, 0.60, 0.05, 0.25]])
    n = 4000
    strategy = BaseStrategy(top_k=0, top_p=0.7, seed=7)
    strategy.start(2 * n, torch.device("cpu"))
    tokens, _ = strategy.forward(probs.log().repeat(n, 1), torch.zeros(2 * n, 1, dtype=torch.long))
    drawn = tokens[:, 1].view(n, 2)
    freq0 = torch.bincount(drawn[:, 0], minlength=4) / n
    freq1 = torch.bincount(drawn[:, 1], minlength=4) / n
    assert torch.allclose(freq0, torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0, 0]), atol=0.03)
    assert torch.allclose(freq1, torch.tensor([0, 0.6 / 0.85, 0, 0.25 / 0.85]), atol=0.03)


def test_base_strategy_is_seeded_and_ends_rows():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))

    def draw(seed):
        s = BaseStrategy(top_k=0, end_tokens=[], seed=seed)
        s.start(3, torch.device("cpu"))
        tokens = torch.zeros(3, 0, dtype=torch.long)
        for _ in range(20):
            tokens, _ = s.forward(logits, tokens)
        return tokens

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    # a row ends at its end token (kept), is -1 afterwards, and `last` ends a row too
    s = BaseStrategy(top_k=1, end_tokens=[4])
    s.start(3, torch.device("cpu"))
    greedy = torch.full((3, 6), -100.0)
    greedy[0, 4] = greedy[1, 2] = greedy[2, 3] = 0.0
    tokens, parents = s.forward(greedy, torch.zeros(3, 1, dtype=torch.long),
                                last=torch.tensor([False, True, False]))
    assert parents is None and tokens[:, 1].tolist() == [4, 2, 3] and not s.is_done
    tokens, _ = s.forward(greedy, tokens)
    assert tokens[:, 2].tolist() == [-1, -1, 3]
    assert s.finalize(tokens) == [[[0, 4]], [[0, 2]], [[0, 3, 3]]]


# ---- beam search on a model whose logits the test sets --------------------------------------

EOP, EOS = 6, 7  # end tokens of the 8-token vocabulary below


class MarkovModel(nn.Module):
    """Next-token log-probabilities depend only on the last input token: TABLE[last]."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids, position_ids=None, attention_mask=None, kv_cache=None,
                parallel_output=False):
        if kv_cache is not None:  # keep the cache's length and beam order honest
            seen = input_ids[:, None, :, None].float()
            kv_cache.update(0, seen, seen)
        return torch.stack([torch.stack([self.table[int(t)] for t in row]) for row in input_ids])


def distribution(**probs):
    """log p over tokens t0..t7, e.g. distribution(t6=0.4, t3=0.35, ...); must sum to 1."""
    p = torch.tensor([probs[f"t{i}"] for i in range(8)], dtype=torch.float64)
    assert abs(p.sum() - 1) < 1e-12
    return p.log().float()


STEP1 = distribution(t6=0.4, t3=0.35, t4=0.2, t7=0.015, t5=0.012, t2=0.01, t1=0.008, t0=0.005)
AFTER3 = distribution(t6=0.95, t7=0.012, t5=0.011, t4=0.009, t3=0.006, t2=0.005, t1=0.004, t0=0.003)
AFTER4 = distribution(t5=0.6, t7=0.3, t6=0.026, t4=0.02, t3=0.018, t2=0.014, t1=0.012, t0=0.01)
BEAM_TABLE = {2: STEP1, 3: AFTER3, 4: AFTER4}
for _t in (0, 1, 5, 6, 7):
    BEAM_TABLE[_t] = AFTER4


def beam_search(lp, out_seq_length=10, **kw):
    strategy = BeamSearchStrategy(2, length_penalty=lp, consider_end=True, end_tokens=[EOP, EOS],
                                  deterministic=True, **kw)
    result = batch_filling_sequence(MarkovModel(BEAM_TABLE), [[1, 2]], [None], strategy,
                                    out_seq_length)
    return result[0], strategy.end_scores[0]


def penalized(p, length, lp):
    return math.log(p) / ((5 + length) / 6) ** lp


@pytest.mark.parametrize("lp", [1.0, 2.0])
def test_beam_search_length_penalty_by_hand(lp):
    # Step 1 from [1 2]: candidates 6 (.4), 3 (.35), 4 (.2), 7 (.015), 5, 2. The end tokens
    # finish [1 2 6] and [1 2 7]; [1 2 3] and [1 2 4] live on.
    # Step 2: cumulative 3->6 .35*.95, 4->5 .2*.6, 4->7 .2*.3, 4->6, 3->7, 4->4: [1 2 3 6] and
    # [1 2 4 7] finish, [1 2 4 5] and [1 2 4 4] live. Done: the worse kept finished score beats
    # the best live one, log(.12) / (9/6)^lp.
    short, long = penalized(0.4, 3, lp), penalized(0.35 * 0.95, 4, lp)
    beams, scores = beam_search(lp)
    # lp = 1 keeps the shorter beam first (-0.687 > -0.734); lp = 2 the longer (-0.489 > -0.515)
    expected = [([1, 2, 6], short), ([1, 2, 3, 6], long)]
    expected.sort(key=lambda e: -e[1])
    assert beams == [b for b, _ in expected]
    assert scores == pytest.approx([s for _, s in expected], abs=1e-5)


def test_beam_search_min_length_and_live_beams_at_the_length_limit():
    # min_gen_length 1 forbids 6 and 7 at step 1, so [1 2 3] and [1 2 4] carry log(.35/.585)
    # and log(.2/.585). Step 2 (the last: out_seq_length 4): 3->6 finishes with .35/.585*.95;
    # [1 2 4 5] (.2/.585*.6) and [1 2 4 4] are live, and with consider_end join the list.
    beams, scores = beam_search(1.0, out_seq_length=4, min_gen_length=1)
    assert beams == [[1, 2, 3, 6], [1, 2, 4, 5]]
    assert scores == pytest.approx([penalized(0.35 / 0.585 * 0.95, 4, 1.0),
                                    penalized(0.2 / 0.585 * 0.6, 4, 1.0)], abs=1e-5)


def test_beam_search_bans_repeated_ngrams():
    # Every token prefers 3 (.7), then 4 (.2), then 5 (.05). Greedy (one beam) gives 3 3 3 ...;
    # a bigram ban keyed on the last token, starting once the sequence is longer than 2:
    # 3 (no ban yet), 4 (3 3 seen), 3, 5 (3 3 and 3 4 seen), 3.
    likes3 = distribution(t3=0.7, t4=0.2, t5=0.05, t0=0.02, t1=0.015, t2=0.01, t6=0.003, t7=0.002)
    model = MarkovModel({t: likes3 for t in range(8)})

    def run(ngram):
        s = BeamSearchStrategy(1, length_penalty=1.0, consider_end=True, end_tokens=[EOP, EOS],
                               no_repeat_ngram_size=ngram, deterministic=True)
        return batch_filling_sequence(model, [[1, 3]], [None], s, 7)[0], s.end_scores[0]

    assert run(0)[0] == [[1, 3, 3, 3, 3, 3, 3]]
    beams, scores = run(2)
    assert beams == [[1, 3, 3, 4, 3, 5, 3]]
    # banned tokens leave the softmax: 4 is drawn from .2/.3, 5 from .05/.1
    assert scores == pytest.approx([penalized(0.7 ** 3 * (0.2 / 0.3) * (0.05 / 0.1), 7, 1.0)],
                                   abs=1e-5)


def test_stochastic_beam_search_is_seeded():
    model = lively_model()

    def run(seed):
        s = BeamSearchStrategy(3, length_penalty=1.0, consider_end=True, end_tokens=[125],
                               no_repeat_ngram_size=3, seed=seed)
        return batch_filling_sequence(model, [[5, 6, 7, 124]], [None], s, 20)

    assert run(3) == run(3) and run(3) != run(4)


# ---- decoding: cache and batching ---------------------------------------------------------

def greedy():
    return BaseStrategy(top_k=1, end_tokens=[125])


def test_greedy_decoding_with_the_cache_equals_full_recomputation():
    model = lively_model()
    cached = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS, greedy(), 30)
    full = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS, greedy(), 30, use_cache=False)
    assert cached == full
    assert len({tuple(r[0][len(c):]) for r, c in zip(cached, CONTEXTS)}) == 4  # not degenerate
    assert all(len(r[0]) == 30 for r in cached)  # each row stops at the total length


def test_beam_search_with_the_cache_equals_full_recomputation():
    model = lively_model()

    def run(use_cache):
        s = BeamSearchStrategy(3, length_penalty=1.0, consider_end=True, end_tokens=[125],
                               deterministic=True)
        return batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS, s, 20, use_cache)

    assert run(True) == run(False)


def test_batched_prompts_of_different_lengths_equal_each_alone():
    model = lively_model()
    together = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS, greedy(), 30)
    alone = [batch_filling_sequence(model, [c], [m], greedy(), 30)[0]
             for c, m in zip(CONTEXTS, MASK_POSITIONS)]
    assert together == alone


def test_batched_beam_search_equals_each_alone():
    model = lively_model()

    def beams():
        return BeamSearchStrategy(3, length_penalty=1.0, consider_end=True, end_tokens=[125, 2],
                                  no_repeat_ngram_size=2, deterministic=True)

    together = batch_filling_sequence(model, CONTEXTS, MASK_POSITIONS, beams(), 24)
    alone = [batch_filling_sequence(model, [c], [m], beams(), 24)[0]
             for c, m in zip(CONTEXTS, MASK_POSITIONS)]
    assert together == alone and all(len(r) == 3 for r in together)


# ---- blank filling --------------------------------------------------------------------------

class ScriptedModel(nn.Module):
    """Emits the tokens of `script[k]` for the k-th blank, and records what it was given: the
    input, the positions and the dense mask of every call."""

    def __init__(self, vocab_size, script):
        super().__init__()
        self.vocab_size, self.script, self.calls = vocab_size, script, []

    def forward(self, input_ids, position_ids=None, attention_mask=None, kv_cache=None,
                parallel_output=False):
        b, s = input_ids.shape
        past = grow_cache(kv_cache, b, s)
        if past == 0:
            self.blank, self.context_length = len({c["blank"] for c in self.calls}), s
        self.calls.append(dict(blank=self.blank, input_ids=input_ids.tolist(),
                               positions=position_ids.tolist(),
                               blocked=dense_mask(attention_mask, b, s, past, input_ids.device)))
        step = past + s - self.context_length
        logits = torch.zeros(b, s, self.vocab_size)
        logits[:, -1, self.script[self.blank][step]] = 10.0
        return logits


def reference_mask_and_positions(context_length, total, mask_position):
    """generate.py's get_masks_and_position_ids (reference §2.1), verbatim in meaning."""
    mask = torch.ones(1, total, total).tril()
    mask[..., :context_length - 1] = 1
    blocked = (mask.unsqueeze(1) < 0.5)
    positions = torch.arange(total)
    if mask_position is not None:
        positions[context_length - 1:] = mask_position
    return blocked, positions


def test_fill_two_masks_left_to_right_with_reference_positions_masks_and_output(tokenizer):
    tok = tokenizer
    MASK, sop, eop, eos = (tok.get_command(n) for n in ("[MASK]", "sop", "eop", "eos"))
    red, blue = tok.tokenize("red"), tok.tokenize("blue")
    A, B, C = tok.tokenize("A "), tok.tokenize(" B "), tok.tokenize(" C")
    model = ScriptedModel(tok.num_tokens, [red + [eop], blue + [eos]])
    prompt = build_prompt("A [MASK] B [MASK] C", tok, max_sequence_length=64)
    assert prompt.tokens == A + [MASK] + B + [MASK] + C + [eos]
    total = 40
    strategy = BaseStrategy(top_k=1, end_tokens=[eop, eos])
    [filled] = fill_blanks(model, tok, [prompt], strategy, out_seq_length=total)

    rounds = [(A + [MASK] + B + [MASK] + C + [eos, sop], len(A), red + [eop]),
              (A + red + B + [MASK] + C + [eos, sop], len(A + red + B), blue + [eos])]
    for blank, (context, mask_position, fill) in enumerate(rounds):
        calls = [c for c in model.calls if c["blank"] == blank]
        assert calls[0]["input_ids"] == [context]
        assert [c["input_ids"] for c in calls[1:]] == [[[t]] for t in fill[:-1]]
        blocked, positions = reference_mask_and_positions(len(context), total, mask_position)
        seen = 0
        for call in calls:
            q = len(call["input_ids"][0])
            assert call["positions"] == [positions[seen:seen + q].tolist()]
            assert torch.equal(call["blocked"], blocked[..., seen:seen + q, :seen + q])
            seen += q
    assert len(model.calls) == len(red + blue) + 2  # stops at each end token

    # §6.6: the mask replaced in place, each fill seen by the next, eos dropped at the end
    assert filled.answers == [tok.detokenize(A + red + B + blue + C)]
    assert filled.blanks == [[tok.detokenize(red), tok.detokenize(blue)]]
    green, end = "\x1b[0;32m\033[4m", "\033[0m\x1b[0m"
    assert filled.styled == [f"{tok.detokenize(A)} {green}red{end} {tok.detokenize(B)} "
                             f"{green}blue{end} {tok.detokenize(C)}"]
    assert filled.answers == ["A red B blue C"]


def test_prompt_rules(tokenizer):
    tok = tokenizer
    MASK, gMASK, sMASK, eos = (tok.get_command(n) for n in ("[MASK]", "[gMASK]", "[sMASK]", "eos"))
    plain = build_prompt("Paris is big", tok, 64)  # no mask: [gMASK] appended, no eos
    assert plain.tokens == tok.tokenize("Paris is big") + [gMASK] and plain.use_gmask
    assert plain.text == "Paris is big [gMASK]" and plain.mask_id == gMASK
    tail = build_prompt("[gMASK] Paris", tok, 64)  # text after the mask: eos appended
    assert tail.tokens == [gMASK] + tok.tokenize(" Paris") + [eos]
    mixed = build_prompt("[sMASK] x [MASK] y [gMASK]", tok, 64)  # [MASK] wins; others stay
    assert mixed.mask_id == MASK and not mixed.use_gmask
    assert mixed.tokens == [sMASK] + tok.tokenize(" x ") + [MASK] + tok.tokenize(" y ") + [gMASK]
    assert build_prompt("a [sMASK] b", tok, 64).mask_id == sMASK
    n = len(tok.tokenize("one two three four five six")) + 1
    assert len(build_prompt("one two three four five six", tok, n).tokens) == n
    with pytest.raises(PromptError, match=f"text too long: {n} tokens, more than "
                                          f"--max-sequence-length {n - 1}"):
        build_prompt("one two three four five six", tok, n - 1)
    with pytest.raises(PromptError, match="no room to generate"):
        build_prompt("one two three four five six", tok, 64, out_seq_length=n + 1)


def test_a_blank_without_budget_stays_empty_and_the_next_may_fit(tokenizer):
    """An empty blank takes its mask away: the sequence is a token shorter for the next one."""
    tok = tokenizer
    MASK, sop = tok.get_command("[MASK]"), tok.get_command("sop")
    prompt = build_prompt("A [MASK] B [MASK] C", tok, max_sequence_length=64)
    filling = Filling(prompt, 1)
    first = prompt.tokens.index(MASK)
    context = filling.next_context(tok, out_seq_length=len(prompt.tokens) + 1)
    assert context == prompt.tokens[:first] + prompt.tokens[first + 1:] + [sop]
    assert filling.skipped == 1 and filling.pieces == [[tok.detokenize(prompt.tokens[:first]), ""]]
    assert filling.next_context(tok, out_seq_length=len(prompt.tokens) + 1) == context  # again
    assert Filling(prompt, 1).next_context(tok, out_seq_length=3) is None  # neither fits
    strategy = BaseStrategy(top_k=1, end_tokens=[tok.get_command("eop")])
    model = lively_model(vocab_size=tok.num_tokens, max_sequence_length=64)
    [filled] = fill_blanks(model, tok, [prompt], strategy, out_seq_length=len(prompt.tokens) + 1)
    assert filled.blanks[0][0] == "" and len(filled.blanks[0]) == 2


def test_streamed_text_shows_each_part_once_and_waits_for_incomplete_characters(tokenizer):
    tok = tokenizer
    dragon, paris = byte_pieces(tok), tok.tokenize("Paris")
    shown = Shown()
    steps = [paris, paris + dragon[:1], paris + dragon[:2], paris + dragon, tok.tokenize("Pa")]
    assert [shown.delta(settled(tok, ids)) for ids in steps] == ["Paris", "", "", "龍", ""]
    assert shown.text == "Paris龍"
    # a byte that nothing can complete any more keeps SentencePiece's U+FFFD
    assert settled(tok, dragon[:1] + paris) == tok.detokenize(dragon[:1] + paris)
    assert settled(tok, dragon[:1] + paris).startswith("\ufffd")


def test_no_streamed_or_final_text_holds_part_of_a_character(tokenizer):
    tok = tokenizer
    dragon, red, eop = byte_pieces(tok), tok.tokenize("red"), tok.get_command("eop")
    prompt = build_prompt("法国的首都是[MASK]。二加三等于[MASK]。", tok, 64)
    # the first blank stops after a character's first byte, the second goes on with text
    model = ScriptedModel(tok.num_tokens, [red + dragon[:1] + [eop], dragon[:1] + red + [eop]])
    streamed = {}

    def on_token(prompt, blank, ids):
        streamed.setdefault(blank, []).append(settled(tok, blank_ids(ids, end_tokens(tok))))

    strategy = BaseStrategy(top_k=1, end_tokens=end_tokens(tok))
    [filled] = fill_blanks(model, tok, [prompt], strategy, 40, on_token=on_token)
    assert filled.blanks == [["red", tok.detokenize(dragon[:1] + red)]]
    assert all("\ufffd" not in text for text in streamed[0]) and streamed[0][-1] == "red"
    assert filled.answers[0].count("\ufffd") == 1  # the second blank's, as SentencePiece has it
    # a [gMASK] fill whose budget ends after the first byte
    prompt = build_prompt("Two plus three is", tok, 64)
    model = ScriptedModel(tok.num_tokens, [red + dragon[:1]])
    [filled] = fill_blanks(model, tok, [prompt], strategy, len(prompt.tokens) + 1 + len(red) + 1)
    assert filled.blanks == [["red"]] and not filled.answers[0].endswith("\ufffd")


def test_a_blank_ends_at_eod_in_generate_and_evaluation(tokenizer):
    tok = tokenizer
    eod, red = tok.get_command("eod"), tok.tokenize("red")
    prompt = build_prompt("Two plus three is", tok, 64)
    model = ScriptedModel(tok.num_tokens, [red + [eod]])
    strategy = build_strategy(tok, tok.num_tokens, SamplingConfig(top_k=1))
    [filled] = fill_blanks(model, tok, [prompt], strategy, 40)
    assert filled.blanks[0] == ["red"] and "[eod]" not in filled.answers[0]
    assert len(model.calls) == len(red) + 1  # and not on to the end of the budget
    beams = SamplingConfig(sampling_strategy="BeamSearchStrategy", num_beams=2)
    model = Favouring(lively_model(vocab_size=tok.num_tokens), eod)
    [filled] = fill_blanks(model, tok, [prompt], build_strategy(tok, tok.num_tokens, beams), 40)
    assert filled.blanks[0] == [""] and not any("[eod]" in a for a in filled.answers)
    model = Favouring(lively_model(vocab_size=tok.num_tokens), eod)
    task = GenerationTask(model, tok, GenerationTaskConfig(name="t", type="gen", path=".",
                                                          max_gen_length=6))
    examples = [GenerationExample(tok.tokenize("The capital of France is"), [], {})]
    assert task.predict(examples, FileData("f", examples)) == [[]] and model.calls == 1


def test_blanks_are_spaced_off_by_the_script_beside_them(tokenizer):
    prompt = build_prompt("France is[MASK].", tokenizer, 64)
    cases = [(["France is", "A", "."], "France is A ."),                    # the case
             (["The capital of China is", "北京", "."], "The capital of China is 北京 ."),
             (["法国的首都是", "Paris", "。"], "法国的首都是Paris。"),
             (["Hello 世界，", "friend", "!"], "Hello 世界，friend !"),
             (["Say ", "hi", ""], "Say hi"),  # a space there already; none at the end
             (["", "Paris", " is big"], "Paris is big")]
    for pieces, want in cases:
        assert styled(pieces, prompt, color=False) == want
    green, end = "\x1b[0;32m\033[4m", "\033[0m\x1b[0m"
    assert styled(["France is", "A", "."], prompt) == f"France is {green}A{end} ."


def test_fill_blanks_batches_prompts_with_several_masks_as_each_alone(tokenizer):
    tok = tokenizer
    model = lively_model(vocab_size=tok.num_tokens + 4, max_sequence_length=128)
    texts = ["The capital of France is [MASK].", "法国的首都是[MASK]。二加三等于[MASK]。",
             "Two plus [MASK] is [MASK] and [MASK]", "日本的首都是"]
    prompts = [build_prompt(t, tok, 128) for t in texts]

    def strategy():
        return BaseStrategy(top_k=1, end_tokens=[tok.get_command("eop"), tok.get_command("eos")],
                            invalid_slices=[slice(tok.num_tokens, None)])

    together = fill_blanks(model, tok, prompts, strategy(), out_seq_length=40)
    alone = [fill_blanks(model, tok, [p], strategy(), out_seq_length=40)[0] for p in prompts]
    assert together == alone
    assert [len(f.blanks[0]) for f in together] == [1, 2, 3, 1]
    # Chinese gets no spaces around its blanks; English does
    assert together[1].styled[0].startswith(tok.detokenize(tok.tokenize("法国的首都是")) + "\x1b")
    assert together[0].styled[0].startswith("The capital of France is \x1b")
    # the [gMASK] of a text without a mask is filled at the end, plain underline
    assert together[3].styled[0].startswith("日本的首都是\033[4m")


def test_rows_joining_and_leaving_a_decode_batch_decode_as_each_alone():
    """The server's continuous batching in miniature: a row joins a batch mid-way (longer than
    the rows already there, so they get padded), another leaves; every row's greedy tokens are
    what it decodes alone."""
    from glm130b.generation import DecodeBatch, pad_left
    model = lively_model()

    def alone(context, mask_position, steps):
        return batch_filling_sequence(model, [context], [mask_position], greedy(),
                                      len(context) + steps)[0][0][len(context):]

    batch, rows = DecodeBatch(model), []  # rows: [context, mask position, tokens so far]

    def join(k):
        rows.append([CONTEXTS[k], MASK_POSITIONS[k], []])
        width = len(CONTEXTS[k])
        return batch.prefill(*pad_left([CONTEXTS[k]], [MASK_POSITIONS[k]], width))

    logits, left = torch.cat((join(1), join(3))), []
    for step in range(12):
        for row, next_token in zip(rows, logits.argmax(-1).tolist()):
            row[2].append(next_token)
        if step == 6:  # the first row leaves
            batch.select(torch.arange(1, len(rows)))
            left.append(rows.pop(0))
        tokens = torch.tensor([r[2][-1] for r in rows])
        positions = torch.tensor([len(r[0]) + len(r[2]) - 1 if r[1] is None else r[1]
                                  for r in rows])
        logits = batch.decode(tokens, positions)
        if step == 3:  # the longest context arrives: the rows already there get padded
            logits = torch.cat((logits, join(2)))
    assert [len(r[2]) for r in left + rows] == [7, 12, 8]
    for context, mask_position, tokens in left + rows:
        assert tokens == alone(context, mask_position, len(tokens))
