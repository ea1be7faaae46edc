"""`bash scripts/evaluate.sh tasks/sample` on a tiny checkpoint made here: the report, and a
results file whose numbers are those of evaluating the same model in-process; a bad task
config or a missing data folder stops the CLI with one line before any model is built;
--allow-missing, --limit and what the results file says about the run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import glm130b
from glm130b import save_checkpoint
from glm130b.cli import run
from glm130b.evaluate import main
from glm130b.evaluation import evaluate_tasks, load_tasks
from helpers import lively_model, make_tokenizer, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_evaluate_sh_on_the_sample_tasks(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    model = lively_model(vocab_size=-(-(tokenizer.num_tokens + 4) // 8) * 8)
    save_checkpoint(model, tmp_path / "ckpt", iteration=1)
    c = model.config
    (tmp_path / "model.sh").write_text(
        "MP_SIZE=1\n"
        f'MODEL_ARGS="--num-layers {c.num_layers} --hidden-size {c.hidden_size} '
        f"--num-attention-heads {c.num_attention_heads} --inner-hidden-size "
        f"{c.inner_hidden_size} --vocab-size {c.vocab_size} --max-sequence-length 256 "
        f"--tokenizer-type sentencepiece --tokenizer-model {tmp_path / 'tok.model'} "
        f'--load {tmp_path / "ckpt"}"\n', encoding="utf-8")
    env = dict(os.environ, MODEL_CONFIG=str(tmp_path / "model.sh"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    env.pop("DATA_PATH", None)
    proc = subprocess.run(["bash", "scripts/evaluate.sh", "tasks/sample", "--output-path",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for line in ("Evaluating task facts-choice:", "Finish en/template-0.jsonl, Accuracy = ",
                 "Group en Accuracy: max = ", "Finish task facts-lm-zh in ", "Finish 4 tasks in "):
        assert line in out
    [written] = (tmp_path / "out").iterdir()
    saved = json.loads(written.read_text(encoding="utf-8"))["tasks"]

    torch.set_num_threads(1)
    want = evaluate_tasks(model.eval(), tokenizer, load_tasks([str(REPO / "tasks" / "sample")]))
    assert [t["name"] for t in saved] == [t["name"] for t in want]
    for got, expected in zip(saved, want):
        for group, entry in expected["groups"].items():
            for name, f in entry["files"].items():
                mine = got["groups"][group]["files"][name]
                assert mine["metrics"] == pytest.approx(f["metrics"], rel=1e-4)
                assert len(mine["predictions"]) == f["examples"] > 0
                assert f"Finish {name}, " in out
            for metric, stats in entry["stats"].items():
                assert got["groups"][group]["stats"][metric] == pytest.approx(stats, rel=1e-4)


def test_a_bad_config_is_one_line_before_the_model(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: mul\npath: d\nmicro_batch: 2\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit:
        run(main, ["--task", str(tmp_path), "--tokenizer-type", "sentencepiece",
                   "--tokenizer-model", str(tmp_path / "missing.model")])
    assert exit.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}: unknown field 'micro_batch' (known: name, type, path, "
                   "module, metrics, use-task-mask, use-multitask-encoding, unidirectional, "
                   "max-seq-length, file-pattern, micro-batch-size)"]


def test_missing_data_is_one_line_before_the_model(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text("name: t\ntype: mul\npath: here\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit:
        run(main, ["--task", str(tmp_path), "--data-path", str(tmp_path / "typo"),
                   "--tokenizer-type", "sentencepiece",
                   "--tokenizer-model", str(tmp_path / "missing.model")])
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tmp_path / 't.yaml'}: the data folder {tmp_path / 'typo' / 'here'} does not "
        "exist; check --data-path, or pass --allow-missing to skip tasks without data"]


@pytest.mark.slow
def test_allow_missing_limit_and_what_the_results_file_says(tmp_path):
    _, _, model_args = tiny_checkpoint(tmp_path)
    tasks, data = tmp_path / "tasks", tmp_path / "tasks" / "mc"
    data.mkdir(parents=True)
    (tasks / "mc.yaml").write_text("name: mc\ntype: mul\npath: mc\n", encoding="utf-8")
    (tasks / "gone.yaml").write_text("name: gone\ntype: mul\npath: gone\n", encoding="utf-8")
    item = {"inputs_pretokenized": "A cat sat on", "choices_pretokenized": ["a mat", "red"],
            "label": 0}
    lines = [json.dumps(item), ""] + [json.dumps(item)] * 4  # the first two: lines 1 and 3
    (data / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "glm130b.evaluate", *model_args, "--task",
                           str(tasks), "--allow-missing", "--limit", "2", "--output-path",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"skipped: the data folder {tasks / 'gone'} does not exist" in out
    assert "1 task(s) skipped for want of data" in out
    assert out.index("Group all Accuracy: ") < out.index("| Task | Group | Metric ")
    [row] = [line for line in out.splitlines() if line.startswith("| mc ")]
    assert " ± " in row  # two examples: a standard error
    [written] = (tmp_path / "out").iterdir()
    saved = json.loads(written.read_text(encoding="utf-8"))
    assert saved["missing"] == [{"task": "gone", "yaml": str(tasks / "gone.yaml"),
                                 "path": str(tasks / "gone")}]
    predictions = saved["tasks"][1]["groups"]["all"]["files"]["test.jsonl"]["predictions"]
    assert [p["line"] for p in predictions] == [f"{data / 'test.jsonl'}:1",
                                                f"{data / 'test.jsonl'}:3"]
    run = saved["run"]
    assert run["model"]["num_layers"] == 2 and run["limit"] == 2
    assert run["checkpoint"] == {"folder": str(tmp_path / "ckpt"), "iteration": "1"}
    assert run["tokenizer"] == {"type": "sentencepiece", "model": str(tmp_path / "tok.model")}
    assert (run["seed"], run["version"]) == (1234, glm130b.__version__)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert run["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert run["started"] <= run["finished"]
