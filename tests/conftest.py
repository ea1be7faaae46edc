"""Fixtures shared by the test modules."""
import json

import pytest
import torch

from glm130b.data.corpus import generate_corpus
from glm130b.tokenization import get_tokenizer
from glm130b.tokenization.train import train_tokenizer
from helpers import make_training_data


@pytest.fixture(scope="module")
def one_thread():
    """Models this small run fastest on one thread, and a shared machine stays usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small sentencepiece tokenizer with GLM's special tokens, trained here."""
    from helpers import make_tokenizer
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    """A 1000-piece BPE model trained on 400 documents of the quickstart's corpus."""
    folder = tmp_path_factory.mktemp("corpus-tok")
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                              for t in generate_corpus(400, 0)), encoding="utf-8")
    return str(train_tokenizer([corpus], folder / "tok", vocab_size=1000, model_type="bpe"))


@pytest.fixture(scope="module")
def tok(tok_model):
    return get_tokenizer("sentencepiece", tok_model)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tok_model):
    """Token files of the quickstart's corpus, tokenized with `tok_model`: what the training,
    launch and fault tests train on (test_export.py defines its own)."""
    return make_training_data(tmp_path_factory.mktemp("train-data"), tok_model)
