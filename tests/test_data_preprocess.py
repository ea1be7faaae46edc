"""Token files (.bin/.idx) and the preprocessing CLI: round trips, refusals of foreign or
damaged files, atomic output, bad lines reported and skipped, workers not changing a byte."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from glm130b.errors import TokenFileError, UsageError
from glm130b.data import preprocess as pre
from glm130b.data.corpus import generate_corpus
from glm130b.data.indexed import (IndexedDataset, TokenFileWriter,
                                  TokenSamples)

REPO = Path(__file__).resolve().parents[1]




def write_docs(prefix, docs, vocab):
    with TokenFileWriter(prefix, vocab) as out:
        for d in docs:
            out.add(d)


# ---- the file format ------------------------------------------------------------------------

@pytest.mark.parametrize("vocab, dtype", [(1008, np.uint16), (65499, np.uint16),
                                          (65500, np.int32), (150528, np.int32)])
def test_round_trip_documents_and_dtype(tmp_path, vocab, dtype):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, vocab, size=n) for n in (5, 0, 17, 1, 300)]
    write_docs(tmp_path / "d", docs, vocab)
    ds = IndexedDataset(tmp_path / "d")
    assert ds.dtype == dtype and len(ds) == 5 and ds.num_tokens == 323
    assert ds.document_lengths.tolist() == [5, 0, 17, 1, 300]
    for got, want in zip(ds, docs):
        assert got.tolist() == want.tolist()
    assert (tmp_path / "d.bin").stat().st_size == 323 * np.dtype(dtype).itemsize


def test_fixed_length_samples_cut_the_concatenated_stream(tmp_path):
    docs = [np.arange(0, 7), np.arange(100, 103), np.arange(200, 211)]  # 21 tokens
    write_docs(tmp_path / "d", docs, 1000)
    samples = TokenSamples(IndexedDataset(tmp_path / "d"), length=5)
    stream = np.concatenate(docs)
    assert len(samples) == 4  # the tail of 1 token is left out
    for i in range(4):
        assert samples[i].tolist() == stream[5 * i:5 * i + 5].tolist()
        assert samples[i].dtype == np.int64
    with pytest.raises(IndexError):
        samples[4]


def test_reader_refuses_foreign_and_damaged_files(tmp_path):
    write_docs(tmp_path / "d", [np.arange(10), np.arange(5)], 1000)
    idx, bin_ = (tmp_path / "d.idx").read_bytes(), (tmp_path / "d.bin").read_bytes()

    def damaged(name, idx_bytes, bin_bytes):
        (tmp_path / f"{name}.idx").write_bytes(idx_bytes)
        (tmp_path / f"{name}.bin").write_bytes(bin_bytes)
        with pytest.raises(TokenFileError) as e:
            IndexedDataset(tmp_path / name)
        return str(e.value)

    assert "bad magic" in damaged("foreign", b"MMIDIDX\x00\x00" + idx[9:], bin_)
    assert "version 2" in damaged("future", idx[:8] + (2).to_bytes(4, "little") + idx[12:], bin_)
    assert "truncated" in damaged("short_idx", idx[:-8], bin_)
    assert "truncated" in damaged("short_bin", idx, bin_[:-2])
    assert "bad magic" in damaged("empty", b"", b"")
    with pytest.raises(TokenFileError, match="not found"):
        IndexedDataset(tmp_path / "absent")
    assert isinstance(TokenFileError("x"), OSError)  # entry points print it in one line


def test_interrupted_write_leaves_the_old_files_and_no_temporaries(tmp_path):
    write_docs(tmp_path / "d", [np.arange(4)], 1000)
    with pytest.raises(RuntimeError):
        with TokenFileWriter(tmp_path / "d", 1000) as out:
            out.add(np.arange(50))
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]
    assert IndexedDataset(tmp_path / "d")[0].tolist() == [0, 1, 2, 3]


# ---- preprocessing --------------------------------------------------------------------------

def corpus_with_bad_lines(path, n=1300):
    """n good documents (more than two chunks of lines) with bad lines among them; returns
    the good texts and the bad line numbers with their reasons."""
    texts = list(generate_corpus(n, 5))
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in texts]
    bad = {3: b"this is not json", 600: json.dumps({"txt": "wrong key"}).encode(),
           601: b'{"text": "caf\xe9 au lait"}', 1000: b"[1, 2, 3]",
           1001: json.dumps({"text": 7}).encode()}
    inserted = {**bad, 11: b"   "}  # a blank line: not a document, not an error
    for number in sorted(inserted):  # ascending, so each lands on its own line number
        lines.insert(number - 1, inserted[number])
    path.write_bytes(b"\n".join(lines) + b"\n")
    return texts, bad


def test_bad_lines_are_reported_and_tokens_match_direct_tokenization(tmp_path, tok, tok_model,
                                                                     capsys):
    corpus = tmp_path / "corpus.jsonl"
    texts, bad = corpus_with_bad_lines(corpus)
    args = ["--input", str(corpus), "--tokenizer-type", "sentencepiece",
            "--tokenizer-model", tok_model]
    assert pre.main(args + ["--output-prefix", str(tmp_path / "two"), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    reasons = ["not JSON", "no string under key 'text'", "not UTF-8", "not a JSON object",
               "no string under key 'text'"]
    for line, reason in zip(sorted(bad), reasons):
        assert f"{corpus}:{line}: {reason}" in err
    assert f"skipped 5 bad line(s), first at {corpus}:3" in err
    assert "tokens/s" in err  # the progress bar's rate

    ds = IndexedDataset(tmp_path / "two")
    eod = tok.get_command("eod")
    assert len(ds) == len(texts)
    for i in (0, 1, 2, 599, 1299):
        assert ds[i].tolist() == tok.tokenize(texts[i]) + [eod]
    assert ds.num_tokens == sum(len(tok.tokenize(t)) + 1 for t in texts)

    pre.main(args + ["--output-prefix", str(tmp_path / "one"), "--workers", "1"])
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"one{suffix}").read_bytes() == (tmp_path / f"two{suffix}").read_bytes()


def test_strict_stops_at_the_first_bad_line_and_writes_nothing(tmp_path, tok_model):
    corpus = tmp_path / "corpus.jsonl"
    corpus_with_bad_lines(corpus)
    with pytest.raises(UsageError, match=r"corpus.jsonl:3: not JSON \(--strict"):
        pre.main(["--input", str(corpus), "--output-prefix", str(tmp_path / "out"),
                  "--tokenizer-type", "sentencepiece", "--tokenizer-model", tok_model,
                  "--workers", "2", "--strict"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl"]


def test_cli_reports_user_errors_in_one_line(tmp_path, tok_model):
    result = subprocess.run(
        [sys.executable, "-m", "glm130b.data.preprocess", "--input", str(tmp_path / "absent.jsonl"),
         "--output-prefix", str(tmp_path / "out"), "--tokenizer-type", "sentencepiece",
         "--tokenizer-model", tok_model],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: input file not found: {tmp_path / 'absent.jsonl'}"


def test_instruction_records_keep_keys_aligned_without_eod(tmp_path, tok, tok_model):
    path = tmp_path / "mip.jsonl"
    records = [{"input": f"What is {i} plus {i}?", "target": str(2 * i)} for i in range(6)]
    lines = [json.dumps(r) for r in records]
    lines.insert(2, json.dumps({"input": "no target here"}))
    path.write_text("\n".join(lines) + "\n")
    summary = pre.preprocess([path], str(tmp_path / "mip"), "sentencepiece", tok_model,
                             json_keys=["input", "target"], workers=1, progress=False)
    assert [b.where for b in summary.bad] == [f"{path}:3"]
    inputs = IndexedDataset(tmp_path / "mip.input")
    targets = IndexedDataset(tmp_path / "mip.target")
    assert len(inputs) == len(targets) == 6
    for i, r in enumerate(records):
        assert inputs[i].tolist() == tok.tokenize(r["input"])
        assert targets[i].tolist() == tok.tokenize(r["target"])


def test_plain_text_lines_are_documents(tmp_path, tok, tok_model):
    path = tmp_path / "corpus.txt"
    path.write_text("The capital of France is Paris.\n\n法国的首都是巴黎。\n")
    pre.preprocess([path], str(tmp_path / "t"), "sentencepiece", tok_model, progress=False)
    ds = IndexedDataset(tmp_path / "t")
    eod = tok.get_command("eod")
    assert [d.tolist() for d in ds] == [tok.tokenize("The capital of France is Paris.") + [eod],
                                        tok.tokenize("法国的首都是巴黎。") + [eod]]
