"""Tokenizers against the reference's rules (reference §3), with small models trained here.

The icetk model is replaced by a SentencePiece model with icetk's first pieces
(<unk> <s> </s> <pad> <n> ...); expected ids are computed from the rules (SentencePiece id +
20000, specials at 150000 + i, eos 20002, pad 0), not from the implementation.
"""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from glm130b.tokenization import (IceTokenizer, SentencePieceTokenizer, add_tokenizer_args,
                                  get_tokenizer)
from glm130b.tokenization.train import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SPECIAL_NAMES = ["[MASK]", "[gMASK]", "[sMASK]", "eod", "sop", "eop", "ENC", "dBLOCK"]
SENTENCE_END = [".", "？", "！", "；", ":", "。", "…"]
ENGLISH = "The capital of France is Paris."
CHINESE = "法国的首都是巴黎。"


def corpus_lines(n=400):
    rng = random.Random(0)
    english = ["Hello World!", ENGLISH, "The capital of Japan is Tokyo.",
               "Two plus three is five.", "What day is it today?", "Note: it rains…",
               "I like apples, bananas and pears.", "Hello world, hello again.",
               "Berlin is a large city; it is old."]
    chinese = [CHINESE, "日本的首都是东京。", "二加三等于五。", "今天是星期几？", "你好，世界！",
               "我喜欢苹果；也喜欢香蕉…", "比例是：一比二。", "北京是一个大城市。"]
    return [" ".join(rng.choice(english + chinese) for _ in range(rng.randint(1, 3)))
            for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ice_model(tmp_path_factory):
    """A stand-in for ice_text.model with icetk's leading pieces pinned. Like icetk's model it
    keeps full-width punctuation (？ is a piece there) and turns newlines into spaces."""
    folder = tmp_path_factory.mktemp("ice")
    (folder / "rule.tsv").write_text("9\t20\nA\t20\nD\t20\n")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_prefix=str(folder / "ice_text"),
        vocab_size=400, hard_vocab_limit=False, character_coverage=1.0,
        normalization_rule_tsv=str(folder / "rule.tsv"), unk_id=0, bos_id=1, eos_id=2,
        pad_id=3, user_defined_symbols=["<n>", "▁", ",", "."], minloglevel=2)
    return folder / "ice_text.model"


@pytest.fixture(scope="module")
def ice(ice_model):
    return IceTokenizer(ice_model)


@pytest.fixture(scope="module")
def sp_ice(ice_model):
    return spm.SentencePieceProcessor(model_file=str(ice_model))


# ---- icetk-glm-130B -------------------------------------------------------------------------

def test_ice_test_model_has_icetk_layout(sp_ice):
    assert [sp_ice.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "<pad>", "<n>"]


def test_ice_text_ids_are_piece_ids_plus_20000(ice, sp_ice):
    text = "Hello World!"
    expected = [i + 20000 for i in sp_ice.encode(text)]
    assert ice.tokenize(text) == expected
    assert ice.encode(text) == expected
    # add_dummy_prefix: the first piece carries the word-boundary mark.
    assert sp_ice.id_to_piece(expected[0] - 20000).startswith("▁")


def test_ice_special_ids(ice):
    for i, name in enumerate(SPECIAL_NAMES):
        assert ice.get_command(name) == 150000 + i
    for name in ["MASK", "gMASK", "sMASK"]:
        assert ice.get_command(name) == ice.get_command(f"[{name}]")
    assert ice.get_command("eos") == 20002
    assert ice.get_command("pad") == 0
    assert ice.num_tokens == 150008
    assert ice.num_text_tokens == 150000


def test_unknown_command_lists_valid_names(ice):
    with pytest.raises(KeyError, match=r"valid names:.*\[gMASK\].*dBLOCK"):
        ice.get_command("[CLS]")


def test_ice_sentence_end_ids(ice, sp_ice):
    expected = {sp_ice.piece_to_id(c) + 20000 for c in SENTENCE_END if sp_ice.piece_to_id(c) != 0}
    assert len(expected) == len(SENTENCE_END)  # every one is in the test corpus
    assert ice.sentence_end_ids == expected


def test_ice_newline_default_is_normalised_away(ice):
    ids = ice.tokenize("abc\nhi")
    assert ids == ice.tokenize("abc hi")
    assert 20004 not in ids
    assert ice.decode(ids) == "abc hi"


def test_ice_newline_kept_as_n_piece(ice_model):
    tok = IceTokenizer(ice_model, ignore_linebreak=False)
    ids = tok.tokenize("Hello\nWorld")
    assert ids.count(20004) == 1
    assert tok.decode(ids) == "Hello\nWorld"
    # decode restores <n> whatever the encoding option was, as icetk does.
    assert IceTokenizer(ice_model).decode(ids) == "Hello\nWorld"


def test_ice_detokenize_renders_specials(ice):
    ids = ice.tokenize("Hello") + [150004] + ice.tokenize("world") + [20002]
    assert ice.detokenize(ids) == "Hello[sop]world[</s>]"
    assert ice.detokenize(torch.tensor(ids)) == "Hello[sop]world[</s>]"
    assert ice.detokenize([150000, 150001, 150002]) == "[MASK][gMASK][sMASK]"
    assert ice.detokenize([0]) == "[pad]"
    assert ice.decode(ids) == "Hello world"


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, f"{ENGLISH} {CHINESE}", "你好，世界！"])
def test_ice_round_trip(ice, text):
    assert ice.decode(ice.encode(text)) == text
    assert ice.detokenize(ice.tokenize(text)) == text


def test_ice_rejects_non_text_ids(ice):
    with pytest.raises(ValueError, match="not text ids"):
        ice.decode([5])


def test_ice_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "ice_text.model"
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        IceTokenizer(missing)
    assert "\n" not in str(err.value) and ".icetk_models" in str(err.value)


def test_ice_default_path_from_env(monkeypatch, tmp_path, ice_model):
    monkeypatch.setenv("ICETK_MODEL_PATH", str(ice_model))
    assert IceTokenizer().tokenize("Hello") == IceTokenizer(ice_model).tokenize("Hello")
    monkeypatch.setenv("ICETK_MODEL_PATH", str(tmp_path / "absent.model"))
    with pytest.raises(FileNotFoundError, match="absent.model"):
        get_tokenizer("icetk-glm-130B", None)


# ---- our own SentencePiece models -----------------------------------------------------------

@pytest.fixture(scope="module")
def sp_model(corpus, tmp_path_factory):
    return train_tokenizer([corpus], tmp_path_factory.mktemp("sp") / "tok", vocab_size=500)


@pytest.fixture(scope="module")
def sp_tok(sp_model):
    return SentencePieceTokenizer(sp_model)


def test_sentencepiece_ids(sp_tok, sp_model):
    assert len(sp_tok.sentence_end_ids) == 7  # full-width punctuation survives training
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    size = sp.get_piece_size()
    assert sp_tok.tokenize("Hello World!") == sp.encode("Hello World!")
    for i, name in enumerate(SPECIAL_NAMES):
        assert sp_tok.get_command(name) == size + i
    assert sp_tok.get_command("eos") == sp.eos_id() == 2
    assert sp_tok.get_command("pad") == sp.pad_id() == 3
    assert sp_tok.num_text_tokens == size
    assert sp_tok.num_tokens == size + 8
    assert sp_tok.sentence_end_ids == {i for c in SENTENCE_END
                                       for i in [sp.piece_to_id(c), sp.piece_to_id("▁" + c)]
                                       if sp.id_to_piece(i) in (c, "▁" + c)}


def test_sentencepiece_detokenize_and_round_trip(sp_tok):
    mask, sop = sp_tok.get_command("[MASK]"), sp_tok.get_command("sop")
    ids = sp_tok.tokenize("Hello") + [mask, sop] + sp_tok.tokenize("world") + [2, 3]
    assert sp_tok.detokenize(ids) == "Hello[MASK][sop]world[</s>][pad]"
    assert sp_tok.decode(ids) == "Hello world"
    # Byte fallback: characters never seen in training still round-trip.
    for text in [ENGLISH, CHINESE, "今天是星期几？我喜欢苹果；也喜欢香蕉…",
                 "Zebras 斑马 🦓 drink."]:
        assert sp_tok.decode(sp_tok.encode(text)) == text


def test_sentencepiece_newlines(sp_model):
    kept = SentencePieceTokenizer(sp_model, ignore_linebreak=False)
    assert kept.decode(kept.tokenize("one\ntwo")) == "one\ntwo"
    assert SentencePieceTokenizer(sp_model).decode(kept.tokenize("one\ntwo")) == "one\ntwo"


def test_sentencepiece_model_without_pad_or_newline(tmp_path):
    prefix = tmp_path / "plain"
    english = [line for line in corpus_lines() if line.isascii()]  # so no bare 。 piece
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(english), model_prefix=str(prefix), vocab_size=300,
        hard_vocab_limit=False, user_defined_symbols=[".", "▁。"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    tok = SentencePieceTokenizer(f"{prefix}.model")
    assert tok.get_command("pad") == 0 and sp.id_to_piece(0) == "<unk>"
    assert tok.get_command("eos") == sp.eos_id()
    # Pad shares its id with <unk>, so it decodes as text rather than as "[pad]".
    assert "[pad]" not in tok.detokenize([0])
    # A sentence end stored only with the dummy-prefix mark is found too.
    assert {sp.piece_to_id("."), sp.piece_to_id("▁。")} <= tok.sentence_end_ids
    with pytest.raises(ValueError, match="<n>"):
        SentencePieceTokenizer(f"{prefix}.model", ignore_linebreak=False)


def test_sentencepiece_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.model"):
        SentencePieceTokenizer(tmp_path / "nope.model")


def test_get_tokenizer_and_args(sp_model, ice_model):
    import argparse
    args = add_tokenizer_args(argparse.ArgumentParser()).parse_args([])
    assert args.tokenizer_type == "icetk-glm-130B" and args.tokenizer_model is None
    args = add_tokenizer_args(argparse.ArgumentParser()).parse_args(
        ["--tokenizer-type", "sentencepiece", "--tokenizer-model", str(sp_model)])
    assert isinstance(get_tokenizer(args.tokenizer_type, args.tokenizer_model),
                      SentencePieceTokenizer)
    assert isinstance(get_tokenizer("icetk-glm-130B", str(ice_model)), IceTokenizer)
    with pytest.raises(ValueError, match="tokenizer-model"):
        get_tokenizer("sentencepiece", None)
    with pytest.raises(ValueError, match="unknown tokenizer type"):
        get_tokenizer("gpt2", None)


# ---- training CLI ---------------------------------------------------------------------------

def run_train(*args):
    return subprocess.run([sys.executable, "-m", "glm130b.tokenization.train", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_train_cli(corpus, tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": line}, ensure_ascii=False) + "\n"
                             for line in corpus_lines(100)), encoding="utf-8")
    out = run_train("--input", corpus, jsonl, "--output-prefix", tmp_path / "m" / "tok",
                    "--vocab-size", 600, "--model-type", "bpe")
    assert out.returncode == 0, out.stderr
    assert "pieces" in out.stdout
    model = tmp_path / "m" / "tok.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert [sp.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "<pad>", "<n>"]
    # JSON syntax never reaches the model.
    assert sp.piece_to_id('"text"') == sp.unk_id()
    tok = SentencePieceTokenizer(model)
    assert tok.decode(tok.encode(CHINESE)) == CHINESE


def test_train_cli_json_key(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(json.dumps({"body": line}) + "\n" for line in corpus_lines(50)))
    out = run_train("--input", docs, "--output-prefix", tmp_path / "k", "--json-key", "body")
    assert out.returncode == 0, out.stderr
    bad = run_train("--input", docs, "--output-prefix", tmp_path / "k", "--json-key", "text")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "'text'" in bad.stderr and "docs.txt:1" in bad.stderr


def test_train_cli_missing_input(tmp_path):
    out = run_train("--input", tmp_path / "missing.txt", "--output-prefix", tmp_path / "x")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "missing.txt" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.model").exists()


def test_incomplete_tail_counts_only_bytes_that_may_still_complete(tmp_path):
    from helpers import byte_pieces, make_tokenizer
    tok = make_tokenizer(tmp_path)
    b, red = byte_pieces(tok), tok.tokenize("red")  # 龍: E9 BE 8D, three byte pieces
    assert [tok.incomplete_tail(ids) for ids in (b[:1], b[:2], b, red + b[:2])] == [1, 2, 0, 2]
    # a continuation byte alone, or a lead byte after which another lead came: invalid for
    # good, decoded as U+FFFD; only the last lead byte may still complete
    assert [tok.incomplete_tail(ids) for ids in (b[1:2], b[:1] + red, b[:1] * 2)] == [0, 0, 1]
    assert tok.incomplete_tail(red) == 0 and tok.incomplete_tail([]) == 0
