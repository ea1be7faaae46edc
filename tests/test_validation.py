"""--split holds documents out, by document and the same every run; validation every
--eval-interval iterations and at the end (and the test part at the end) logs the loss a hand
evaluation of the same samples with the saved weights gives, in every layout."""
import json

import numpy as np
import pytest
import torch

from glm130b.data.indexed import DocumentSubset, IndexedDataset, TokenFileWriter, TokenSamples
from glm130b.data.infilling import InfillingConfig
from glm130b.data.mixture import DataConfig, build_mixture, parse_split, split_documents
from helpers import TRAIN_MODEL as MODEL
from helpers import losses, make_training_data, pretrain
from helpers import train_args as args_for

INFILLING = InfillingConfig(seq_length=64, length_per_sample=60, aggregated_samples_per_sequence=2)


def test_the_split_is_by_document_and_deterministic():
    parts = split_documents(1000, "949,50,1", seed=1234)
    assert [len(parts[p]) for p in ("train", "valid", "test")] == [949, 50, 1]
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(1000))  # each document in one part
    again = split_documents(1000, "949,50,1", seed=1234)
    assert all(np.array_equal(parts[p], again[p]) for p in parts)
    other = split_documents(1000, "949,50,1", seed=1)
    assert not np.array_equal(parts["valid"], other["valid"])
    assert parse_split(None) == parse_split("1") == (1.0, 0.0, 0.0)
    assert parse_split("0.9/0.1") == (0.9, 0.1, 0.0)
    for bad in ("a,b", "1,2,3,4", "-1,2", "0,0,0"):
        with pytest.raises(ValueError, match="--split"):
            parse_split(bad)


def test_a_document_subset_reads_its_documents_end_to_end(tmp_path):
    docs = [np.arange(n) + 100 * i for i, n in enumerate([5, 3, 7, 2, 6])]
    with TokenFileWriter(tmp_path / "d", 1000) as out:
        for d in docs:
            out.add(d)
    subset = DocumentSubset(IndexedDataset(tmp_path / "d"), [1, 2, 4])
    joined = np.concatenate([docs[1], docs[2], docs[4]])
    assert subset.num_tokens == len(joined) == 16
    for start, end in [(0, 16), (2, 9), (3, 10), (10, 16), (15, 16)]:
        assert subset.token_range(start, end).tolist() == joined[start:end].tolist()
    samples = TokenSamples(subset, 4)
    assert len(samples) == 4 and samples[2].tolist() == joined[8:12].tolist()


def test_without_held_out_documents_training_reads_what_it_always_read(tok, tok_model, tmp_path):
    data = make_training_data(tmp_path, tok_model)
    plain = build_mixture(DataConfig([data[1]], infilling=INFILLING), tok, 1234)
    for split in (None, "1000,0,0", "1"):
        same = build_mixture(DataConfig([data[1]], infilling=INFILLING, split=split), tok, 1234)
        assert same.sources[0].dataset.dataset.__class__ is IndexedDataset
        for k in range(5):
            assert np.array_equal(same[k].tokens, plain[k].tokens)
    held = build_mixture(DataConfig([data[1]], infilling=INFILLING, split="80,20,0"), tok, 1234,
                         "valid")
    train = build_mixture(DataConfig([data[1]], infilling=INFILLING, split="80,20,0"), tok, 1234)
    valid_docs = set(held.sources[0].dataset.dataset.documents.tolist())
    train_docs = set(train.sources[0].dataset.dataset.documents.tolist())
    assert valid_docs and train_docs and not valid_docs & train_docs


# -- runs as users run them -------------------------------------------------------------------

def eval_records(log, part="valid") -> dict[int, dict]:
    records = [json.loads(line) for line in open(log)]
    return {r["iteration"]: r for r in records if r.get("eval") == part}


def hand_loss(data, save, split, iters, batch=8, micro=2) -> float:
    """The held-out loss of the weights saved in `save`, computed here in one process."""
    from glm130b.checkpoint import load_checkpoint
    from glm130b.checkpoint.export import export
    from glm130b.config import GLMConfig
    from glm130b.model import GLM
    from glm130b.tokenization import get_tokenizer
    from glm130b.training.collate import collate
    from glm130b.training.engine import lm_loss

    exported = save.parent / f"{save.name}-exported"
    export(save, exported)
    model = GLM(GLMConfig(**MODEL))
    load_checkpoint(model, exported)
    model.eval()
    sampler = build_mixture(DataConfig([data[1]], infilling=INFILLING, split=split),
                            get_tokenizer("sentencepiece", data[0]), 1234, "valid")
    found = []
    with torch.no_grad():
        for start in range(0, iters * batch, micro):
            b = collate([sampler[k] for k in range(start, start + micro)], 64)
            logits = model(b.tokens, b.position_ids, b.attention_mask, parallel_output=True)
            found.append(lm_loss(logits, (b.targets, b.loss_mask)).item())
    return sum(found) / len(found)


@pytest.mark.slow
def test_validation_loss_is_the_hand_evaluation_in_every_layout(data, tmp_path):
    """Dropout on in training (validation turns it off): in one process, data parallel and a
    pipeline, the last validation logged is that of the weights saved at the end."""
    split = "70,20,10"
    common = dict(split=split, eval_interval=2, eval_iters=2, hidden_dropout=0.1,
                  attention_dropout=0.1, train_iters=5, save_interval=5)
    save = tmp_path / "single"
    out = pretrain(args_for(data, save=save, **common))
    valid = eval_records(save / "train_log.jsonl")
    assert sorted(valid) == [2, 4, 5]  # every 2 iterations, and at the end
    assert "valid at iteration 2 | loss" in out.stdout and "test at iteration 5" in out.stdout
    assert sorted(eval_records(save / "train_log.jsonl", "test")) == [5]
    assert valid[5]["eval_samples"] == 16
    assert valid[5]["eval_ppl"] == pytest.approx(np.exp(valid[5]["eval_loss"]))
    assert sorted(losses(save / "train_log.jsonl")) == [1, 2, 3, 4, 5]  # apart from training's
    assert f"saved iteration 5 to {save / 'global_step5'} (" in out.stdout
    assert valid[5]["eval_loss"] == pytest.approx(hand_loss(data, save, split, 2), abs=1e-5)
    assert (save / "tensorboard").is_dir()

    for name, extra in [("dp2", {}), ("pp2", {"pipeline_model_parallel_size": 2})]:
        save = tmp_path / name
        pretrain(args_for(data, save=save, **common, **extra), 2)
        other = eval_records(save / "train_log.jsonl")
        assert sorted(other) == [2, 4, 5], name
        assert other[5]["eval_loss"] == pytest.approx(hand_loss(data, save, split, 2), abs=1e-5)
