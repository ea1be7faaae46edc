"""Evaluation across processes on gloo, one launch of 2 ranks: tensor parallelism (TP=2) gives
the single-process numbers, and so do two data-parallel replicas (DP=2) sharing the examples,
for multiple choice (packed and single-token), greedy generation, LAMBADA's beam search and
language-model windows."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glm130b.evaluation import evaluate_tasks, load_tasks
from glm130b.parallel import destroy_model_parallel, initialize_model_parallel
from glm130b.tokenization import SentencePieceTokenizer
from helpers import copy_into_shards, SENTENCES, lively_model, make_tokenizer

pytestmark = pytest.mark.slow

TASKS = {
    "mc.yaml": 'name: mc\ntype: mul\npath: mc\nmicro-batch-size: 2\n'
               'file-pattern: {multi: "multi.jsonl", single: "single.jsonl"}\n',
    "gen.yaml": 'name: gen\ntype: gen\npath: gen\nmax-gen-length: 5\nmicro-batch-size: 2\n',
    "lambada.yaml": 'name: lambada\ntype: gen\nmodule: glm130b.evaluation.lambada.LAMBADA\n'
                    'path: gen\nsampling_strategy: BeamSearchStrategy\nnum_beams: 3\n'
                    'max_gen_length: 4\nuse_task_mask: true\n',
    "lm.yaml": 'name: lm\ntype: lm\npath: lm\nmax-seq-length: 16\ngeneration-length: 5\n'
               'use-task-mask: true\nmicro-batch-size: 2\nmetrics: [PPL, BPB]\n',
}


def write_tasks(folder):
    for name, text in TASKS.items():
        (folder / name).write_text(text, encoding="utf-8")
    for sub in ("mc", "gen", "lm"):
        (folder / sub).mkdir()
    half = [len(s) // 2 for s in SENTENCES]
    multi = [{"inputs_pretokenized": s[:h], "choices_pretokenized": [s[h:], t[h:], "a cat"],
              "label": i % 3} for i, (s, t, h) in enumerate(zip(SENTENCES, SENTENCES[1:], half))]
    single = [{"inputs_pretokenized": s, "choices": [[40], [41], [97]], "label": i % 3}
              for i, s in enumerate(SENTENCES[:5])]
    gen = [{"inputs_pretokenized": s[:10], "targets_pretokenized": [s[10:]]} for s in SENTENCES]
    for path, items in (("mc/multi.jsonl", multi), ("mc/single.jsonl", single),
                        ("gen/test.jsonl", gen)):
        (folder / path).write_text("".join(json.dumps(i, ensure_ascii=False) + "\n"
                                           for i in items), encoding="utf-8")
    (folder / "lm" / "text.jsonl").write_text(" ".join(SENTENCES * 2), encoding="utf-8")


def evaluate(model, tokenizer, folder):
    results = evaluate_tasks(model, tokenizer, load_tasks([str(folder / "tasks")]))
    return [(r["name"], group, name, f["metrics"], f["predictions"])
            for r in results for group, g in r["groups"].items()
            for name, f in g["files"].items()]


def worker(rank, world, init_file, folder, vocab, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        tokenizer = SentencePieceTokenizer(folder / "tok.model")
        single = lively_model(vocab_size=vocab)  # no groups yet: TP=1, the same on every rank
        expected = evaluate(single, tokenizer, folder)
        initialize_model_parallel(world)
        model = lively_model(vocab_size=vocab)
        copy_into_shards(model, single)
        tensor_parallel = evaluate(model, tokenizer, folder)
        destroy_model_parallel()
        initialize_model_parallel(1)  # two replicas of the single model
        data_parallel = evaluate(single, tokenizer, folder)
        results[rank] = (expected, tensor_parallel, data_parallel)
    finally:
        destroy_model_parallel()
        dist.destroy_process_group()


def assert_same(got, want):
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for (task, _, name, metrics, predictions), expected in zip(got, want):
        assert metrics == pytest.approx(expected[3], rel=1e-5), f"{task} {name}"
        for p, q in zip(predictions, expected[4], strict=True):
            if "scores" in p:
                assert p["scores"] == pytest.approx(q["scores"], abs=1e-4)
                assert p["prediction"] == q["prediction"]
            elif "loss" in p:
                assert p["loss"] == pytest.approx(q["loss"], rel=1e-5)
            else:
                assert p == q, f"{task} {name}"


def test_tp2_and_dp2_evaluate_as_one_process(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    (tmp_path / "tasks").mkdir()
    write_tasks(tmp_path / "tasks")
    vocab = -(-(tokenizer.num_tokens + 4) // 8) * 8
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, str(tmp_path / "init"), tmp_path, vocab, results), nprocs=2)
        results = dict(results)
    expected = results[0][0]
    assert [e[:3] for e in expected] == [
        ("gen", "all", "test.jsonl"), ("lambada", "all", "test.jsonl"),
        ("lm", "all", "text.jsonl"), ("mc", "multi", "multi.jsonl"),
        ("mc", "single", "single.jsonl")]
    assert len(expected[2][4]) >= 3 and len(expected[3][4]) % 2  # windows; odd: uneven split
    for rank in (0, 1):
        assert_same(results[rank][0], expected)
        assert_same(results[rank][1], expected)  # TP=2
        assert_same(results[rank][2], expected)  # DP=2
