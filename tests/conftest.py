"""Fixtures shared by the test modules."""
import pytest
import torch


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
    from test_generation import make_tokenizer
    return make_tokenizer(tmp_path_factory.mktemp("tok"))
