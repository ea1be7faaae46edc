"""Evaluation (reference §2.2, §2.3, §2.5, §7): inputs checked against each choice, window and
generation built on its own from the reference's description; metrics and the report against
hand-worked numbers; configs and data files refused or set aside with file and field/line."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glm130b.errors import ConfigError, UsageError
from glm130b.evaluation import (GenerationTask, GenerationTaskConfig,
                                LanguageModelTask, LanguageModelTaskConfig, MultiChoiceTask,
                                MultiChoiceTaskConfig, evaluate_tasks, load_task_config,
                                load_tasks)
from glm130b.evaluation import metrics
from glm130b.generation import end_tokens
from glm130b.evaluation.datasets import (ChoiceExample, FileData, GenerationExample,
                                        build_multiple_choice_sample, choice_example)
from glm130b.evaluation.ethnic import CrowsPairTask, StereoSetTask
from glm130b.evaluation.lambada import LAMBADA, LambadaBeamSearch, punctuation_bans
from glm130b.evaluation.pile import Pile, PileConfig
from glm130b.evaluation.report import (RunInfo, group_lines, group_stats, group_stderr,
                                       summary_lines, summary_rows)
from glm130b.evaluation.runner import correct_counts
from glm130b.evaluation.sample_tasks import sample_files
from glm130b.model import AttentionMask
from helpers import lively_model

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def model(tokenizer):
    # padded past the tokenizer, as a real vocabulary is
    return lively_model(vocab_size=-(-(tokenizer.num_tokens + 4) // 8) * 8)


def config(cls, **changes):
    kind = {MultiChoiceTaskConfig: "mul", GenerationTaskConfig: "gen",
            LanguageModelTaskConfig: "lm"}[cls]
    return cls(**{"name": "t", "type": kind, "path": ".", **changes})


# ---- multiple choice: packed = each choice in its own sequence -------------------------------

def alone(model, text, choice, mask_id, sop_id, use_task_mask):
    """Reference §2.3 for one choice: context (with the mask appended unless it holds one,
    bidirectional), [sop], the choice but its last token; summed log-probabilities."""
    blank = mask_id in text
    mask_position = text.index(mask_id) if blank else len(text)
    context = list(text) if blank else list(text) + [mask_id]
    tokens = context + [sop_id] + choice[:-1]
    n, d = len(choice), len(context)
    positions = list(range(d)) + (list(range(d, d + n)) if use_task_mask else [mask_position] * n)
    with torch.no_grad():
        logits = model(torch.tensor([tokens]), torch.tensor([positions]),
                       AttentionMask.from_context_lengths(d, len(tokens)))
    log_probs = F.log_softmax(logits[0].double(), dim=-1)
    return sum(log_probs[d + i, choice[i]].item() for i in range(n))


@pytest.mark.parametrize("use_task_mask", [False, True])
def test_packed_choices_score_as_each_choice_alone(model, tokenizer, use_task_mask):
    tok = tokenizer.tokenize
    mask = tokenizer.get_command("[MASK]")
    examples = [
        ChoiceExample(tok("The capital of France is"), [tok("Paris"), tok("Tokyo"),
                                                         tok("a cat on a mat")], 0, {}),
        ChoiceExample(tok("二加三等于"), [tok("五"), tok("今天是星期几")], 1, {}),
        ChoiceExample(tok("Red and blue are") + [mask] + tok("colours."),
                      [tok("two"), tok("nice"), tok("bright red"), tok("blue")], 2, {}),
    ]
    if use_task_mask:
        examples.pop()  # blank filling is a [MASK] thing
    task = MultiChoiceTask(model, tokenizer, config(MultiChoiceTaskConfig,
                                                    use_task_mask=use_task_mask))
    packed = task.predict(examples, FileData("f", examples))  # one padded micro-batch
    for example, scores in zip(examples, packed):
        want = [alone(model, example.text, c, task.mask_id, task.sop_id, use_task_mask)
                for c in example.choices]
        assert scores == pytest.approx(want, abs=2e-4)
    assert len({round(s, 3) for s in packed[0]}) == 3  # the choices do differ


def test_single_token_choices_share_one_sop(model, tokenizer):
    singles = [[40], [41], [97], [120]]
    examples = [ChoiceExample(tokenizer.tokenize("A cat sat on a"), singles, 1, {}),
                ChoiceExample(tokenizer.tokenize("The capital of Japan is"), singles[:2], 0, {})]
    task = MultiChoiceTask(model, tokenizer, config(MultiChoiceTaskConfig))
    data = FileData("f", examples, single_token=True)
    sample = build_multiple_choice_sample(examples[0].text, singles, True, task.mask_id,
                                          task.sop_id)
    assert sample.tokens == examples[0].text + [task.mask_id, task.sop_id]  # one [sop] for all
    for example, scores in zip(examples, task.predict(examples, data)):
        want = [alone(model, example.text, c, task.mask_id, task.sop_id, False)
                for c in example.choices]
        assert scores == pytest.approx(want, abs=2e-4)


def test_context_is_truncated_from_the_left(tokenizer):
    item = {"inputs": list(range(10, 40)), "choices": [[5, 6], [7, 8, 9]], "label": 1}
    example = choice_example(item, tokenizer, max_seq_length=20)
    assert example.text == list(range(27, 40))  # 20 - 5 choice tokens - 2
    item = {"inputs": list(range(10, 40)), "choices": [[5], [7]], "label": 0}
    assert choice_example(item, tokenizer, max_seq_length=20).text == list(range(23, 40))


# ---- language modelling: windows = every token scored once, directly ---------------------------

def test_window_perplexity_equals_scoring_each_token_directly(model, tokenizer, tmp_path):
    text = " ".join(["The capital of France is Paris.", "Two plus three is five.",
                     "A cat sat on a mat.", "Red and blue are colours."] * 2)
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    S, g = 16, 5
    task = LanguageModelTask(model, tokenizer, config(LanguageModelTaskConfig, path=str(tmp_path),
                                                      max_seq_length=S, generation_length=g,
                                                      use_task_mask=True, micro_batch_size=3))
    data = task.read(str(tmp_path / "doc.txt"))
    doc = tokenizer.tokenize(text)
    n = len(doc)
    assert n > S - 1 + 2 * g and (n - (S - 1)) % g  # several windows, the last one short
    assert len(data.examples) == math.ceil((n - (S - 1)) / g) + 1
    losses = [loss for start in range(0, len(data.examples), 3)
              for loss in task.predict(data.examples[start:start + 3], data)]

    gmask, sop, total = task.mask_id, task.sop_id, 0.0
    for i in range(n):  # token i: which window scores it, with what prompt (reference §2.5)
        if i < S - 1:
            prompt, before = [], doc[:i]
        else:
            start = ((i - (S - 1)) // g + 1) * g
            prompt, before = doc[start:start + S - 1 - g], doc[start + S - 1 - g:i]
        tokens = prompt + [gmask, sop] + before
        with torch.no_grad():
            logits = model(torch.tensor([tokens]),
                           attention_mask=AttentionMask.from_context_lengths(len(prompt) + 1,
                                                                             len(tokens)))
        total -= F.log_softmax(logits[0, -1].double(), -1)[doc[i]].item()
    assert sum(losses) == pytest.approx(total, rel=1e-5)
    words = len(text.split(" "))
    assert task.score(losses, data)["PPL"] == pytest.approx(math.exp(min(20, total / words)))
    # the lively model's loss caps the exponent; smaller losses show the word count
    small = [loss / 1000 for loss in losses]
    assert task.score(small, data)["PPL"] == pytest.approx(math.exp(total / 1000 / words),
                                                           rel=1e-4)


# ---- generation: the task's decoding = greedy decoding from the reference's description --------

def greedy_alone(model, text, mask_id, sop_id, use_task_mask, unidirectional, max_gen, end, vocab):
    """Reference §2.2, recomputing the whole sequence for every token."""
    if mask_id in text:
        mask_position, tokens = text.index(mask_id), text + [sop_id]
    else:
        mask_position = len(text)
        tokens = [mask_id, sop_id] + text if unidirectional else text + [mask_id, sop_id]
    context = len(tokens)
    for _ in range(max_gen):
        n = len(tokens)
        positions = list(range(n))
        if not use_task_mask:
            positions[context - 1:] = [mask_position] * (n - context + 1)
        visible = torch.ones(n, n, dtype=torch.bool).tril()
        if not unidirectional:
            visible[:context - 1, :context - 1] = True
        with torch.no_grad():
            logits = model(torch.tensor([tokens]), torch.tensor([positions]),
                           ~visible.view(1, 1, n, n))
        tokens.append(int(logits[0, -1, :vocab].argmax()))
        if tokens[-1] in end:
            return tokens[context:-1]
    return tokens[context:]


@pytest.mark.parametrize("use_task_mask,unidirectional", [(False, False), (True, False),
                                                          (True, True)])
def test_greedy_generation_follows_the_reference_inputs(model, tokenizer, use_task_mask,
                                                        unidirectional):
    tok = tokenizer.tokenize
    texts = [tok("The capital of France is"), tok("二加三等于"), tok("A cat")]
    if not use_task_mask:  # blank filling: the mask inside the text
        texts.append(tok("Red and") + [tokenizer.get_command("[MASK]")] + tok("are colours."))
    cfg = config(GenerationTaskConfig, use_task_mask=use_task_mask,
                 unidirectional=unidirectional, max_gen_length=6, micro_batch_size=4)
    task = GenerationTask(model, tokenizer, cfg)
    examples = [GenerationExample(t, [], {}) for t in texts]
    got = task.predict(examples, FileData("f", examples))
    end = end_tokens(tokenizer)
    want = [greedy_alone(model, t, task.mask_id, task.sop_id, use_task_mask, unidirectional, 6,
                         end, tokenizer.num_tokens) for t in texts]
    assert got == want
    assert len({tuple(w) for w in want}) > 1


# ---- LAMBADA -------------------------------------------------------------------------------

def test_lambada_bans_punctuation_at_the_start():
    strategy = LambadaBeamSearch(2, consider_end=True, end_tokens=[9], deterministic=True,
                                 banned_prefixes=[[3], [4, 5]])
    strategy.start(1, torch.device("cpu"))
    logits = torch.zeros(1, 10)
    logits[0, 3], logits[0, 4], logits[0, 6] = 5.0, 4.0, 3.0  # 3 is banned as a first token
    tokens, _ = strategy.forward(logits, torch.tensor([[1, 2]]))
    assert tokens[:, -1].tolist() == [4, 6]
    logits = torch.zeros(2, 10)
    logits[:, 5] = 5.0  # 5 after 4 completes the banned [4, 5]; after 6 it is fine
    tokens, _ = strategy.forward(logits, tokens)
    beams = {tuple(t) for t in tokens[:, -2:].tolist()}
    assert (6, 5) in beams and (4, 5) not in beams


def test_lambada_picks_the_word_before_punctuation(model, tokenizer):
    cfg = config(GenerationTaskConfig, use_task_mask=True, sampling_strategy="BeamSearchStrategy",
                 num_beams=4, max_gen_length=5)
    task = LAMBADA(model, tokenizer, cfg)
    tok = tokenizer.tokenize
    assert task.choose([tok("cat sat on"), tok("Paris . The")]) == tok("Paris")
    assert task.choose([tok("cat sat on"), tok("mat sat")]) == tok("cat")
    invalid, banned = punctuation_bans(tokenizer)
    assert tok("``") in banned and all(tok(p) in banned for p in ".,!?")
    assert {b[0] for b in banned if len(b) == 1} == set(invalid)
    assert all(i in task.strategy.invalid_slices for i in invalid)


# ---- metrics, hand-worked ------------------------------------------------------------------

def test_metrics_on_hand_worked_examples():
    assert metrics.accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 75.0
    # micro averages over labels: 3 right, 1 wrong -> TP 3, FP 1, FN 1
    assert metrics.micro_precision([0, 1, 1, 2], [0, 1, 2, 2]) == 75.0
    assert metrics.micro_recall([0, 1, 1, 2], [0, 1, 2, 2]) == 75.0
    assert metrics.micro_f1([0, 1, 1, 2], [0, 1, 2, 2]) == 75.0
    assert metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert metrics.exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    # "paris france" vs "paris": precision 1/2, recall 1 -> 2/3
    assert metrics.token_f1("Paris, France", "paris") == pytest.approx(2 / 3)
    predictions, answers = ["Paris, France", "London"], [["Lyon", "paris"], ["Rome"]]
    f1 = metrics.best_over_answers(metrics.token_f1, predictions, answers)
    assert f1 == pytest.approx(100 / 3)  # (2/3 + 0) / 2
    assert metrics.best_over_answers(metrics.exact_match, ["an apple"], [["Apple"]]) == 100.0
    assert metrics.perplexity(6.0, 3) == pytest.approx(math.exp(2.0))
    assert metrics.perplexity(1e6, 1) == pytest.approx(math.exp(20.0))  # capped
    assert metrics.bits_per_byte(10 * math.log(2), 4) == pytest.approx(2.5)


def test_bias_metrics_on_hand_worked_examples(model, tokenizer):
    def examples(items):
        return FileData("f", [ChoiceExample([1], [[2], [3, 4], [5]], 0, item) for item in items])

    crows = CrowsPairTask(model, tokenizer, config(MultiChoiceTaskConfig, metrics=["CP"]))
    data = examples([{"pair_ID": 1, "sent_ID": 1, "bias_type": "race"},
                     {"pair_ID": 1, "sent_ID": 2, "bias_type": "race"},
                     {"pair_ID": 2, "sent_ID": 1, "bias_type": "race"},
                     {"pair_ID": 2, "sent_ID": 2, "bias_type": "race"},
                     {"pair_ID": 3, "sent_ID": 2, "bias_type": "age"},
                     {"pair_ID": 3, "sent_ID": 1, "bias_type": "age"}])
    # pair 1: -2 - (-3) >= 0; pair 2: -5 - (-1) < 0; pair 3: -4 - (-4) = 0 counts
    scores = [[-2.0], [-3.0], [-5.0], [-1.0], [-4.0], [-4.0]]
    assert crows.score(scores, data) == {"CP[race]": 50.0, "CP[age]": 100.0}

    stereo = StereoSetTask(model, tokenizer, config(MultiChoiceTaskConfig,
                                                    metrics=["LMS", "SS", "ICAT"]))
    goal = ["stereotype", "anti-stereotype", "unrelated"]
    data = examples([{"bias_type": "gender", "goal_label": goal} for _ in range(4)])
    # per token: choice 1 has two tokens, so -3.0 counts as -1.5
    scores = [[-1.0, -3.0, -2.0],   # stereotype
              [-2.0, -3.0, -1.0],   # unrelated
              [-2.0, -3.0, -3.0],   # anti-stereotype (-1.5 beats -2)
              [-1.0, -6.0, -9.0]]   # stereotype
    result = stereo.score(scores, data)
    assert result["LMS[gender]"] == 75.0 and result["LMS[overall]"] == 75.0
    assert result["SS[gender]"] == pytest.approx(200 / 3)
    assert result["ICAT[gender]"] == pytest.approx(75.0 * (100 / 3) / 50)


def test_group_statistics_on_made_up_numbers():
    files = [({"Accuracy": 50.0, "F1": 10.0}, 10), ({"Accuracy": 70.0}, 30),
             ({"Accuracy": 60.0, "F1": 20.0}, 60), ({"Accuracy": 0.0}, 0)]
    stats = group_stats(files)
    assert stats["Accuracy"] == {"max": 70.0, "median": 60.0,
                                 "average": (500 + 2100 + 3600) / 100}
    assert stats["F1"] == {"max": 20.0, "median": 15.0, "average": (100 + 1200) / 70}
    assert group_lines("validation", {"Accuracy": stats["Accuracy"]}) == [
        "Group validation Accuracy: max = 70.000, median = 60.000, average = 62.000"]


# ---- configs -------------------------------------------------------------------------------

def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("body,field,why", [
    ('name: t\ntype: mul\npath: d\nfile-patern: "*.jsonl"\n', "file-patern", "unknown field"),
    ('name: t\ntype: mul\npath: d\nmicro-batch-size: eight\n', "micro-batch-size",
     "must be an integer"),
    ('name: t\ntype: gen\npath: d\nuse_task_mask: "yes"\n', "use_task_mask",
     "must be true or false"),
    ('name: t\ntype: mul\nfile-pattern: {a: "x"}\n', "path", "missing required field"),
    ('name: t\ntype: mul\npath: d\nmetrics: [Accuracy, BLEU]\n', "metrics",
     "unknown metric 'BLEU'"),
    ('name: t\ntype: mul\npath: d\nmetrics: []\n', "metrics", "names no metric"),
    ('name: t\ntype: lm\npath: d\nmetrics: [Accuracy]\n', "metrics", "unknown metric 'Accuracy'"),
    ('name: t\ntype: gen\npath: d\nunidirectional: true\n', "unidirectional", "use_task_mask"),
    ('name: t\ntype: mul\npath: d\nmodule: tasks.nowhere.Task\n', "module",
     "needs --trust-task-code"),
    ('name: t\ntype: mul\npath: d\nmodule: glm130b.evaluation.nowhere.Task\n', "module",
     "cannot load"),
    ('name: t\ntype: gen\npath: d\nmodule: tasks.mmlu.task.MMLU\n', "type", "MMLU runs 'mul'"),
])
def test_config_errors_are_one_line_naming_file_and_field(tmp_path, body, field, why):
    path = write(tmp_path / "task.yaml", body)
    with pytest.raises(ConfigError) as error:
        load_task_config(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert f"'{field}'" in message and why in message


def test_config_keys_in_either_case_and_reference_modules(tmp_path):
    path = write(tmp_path / "t.yaml", 'name: L\ntype: gen\nmodule: "tasks.lambada.task.LAMBADA"\n'
                 'path: x\nsampling_strategy: BeamSearchStrategy\nnum-beams: 16\n'
                 'max_gen-length: 5\nuse-task-mask: true\nlength_penalty: 1\n')
    cls, cfg = load_task_config(path)
    assert cls is LAMBADA and cfg.metrics == ["Accuracy"]
    assert (cfg.num_beams, cfg.max_gen_length, cfg.use_task_mask) == (16, 5, True)
    assert cfg.file_pattern == "**/*.json*" and cfg.max_seq_length == 2048


def test_every_yaml_under_tasks_loads():
    loaded = load_tasks([str(REPO / "tasks")])
    names = {Path(t.yaml).relative_to(REPO / "tasks").as_posix() for t in loaded}
    assert {"sample/facts-choice.yaml", "sample/facts-generation.yaml",
            "sample/facts-lm-en.yaml", "sample/facts-lm-zh.yaml"} <= names


def test_committed_sample_tasks_are_what_the_generator_writes():
    folder = REPO / "tasks" / "sample"
    committed = {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
                 for p in folder.rglob("*") if p.is_file()}
    assert committed == sample_files()


# ---- files with problems, and the results file ---------------------------------------------

def test_bad_lines_are_set_aside_and_the_rest_is_evaluated(model, tokenizer, tmp_path, capsys):
    data = tmp_path / "data" / "prompt-a"
    data.mkdir(parents=True)
    good = {"inputs_pretokenized": "The capital of France is",
            "choices_pretokenized": ["Paris", "Tokyo"], "label": 0}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "label": 2}),
             json.dumps({"inputs_pretokenized": "x", "label": 0}), json.dumps({**good, "label": 1})]
    write(data / "test.jsonl", "\n".join(lines) + "\n")
    write(tmp_path / "data" / "empty.jsonl", "")
    yaml = write(tmp_path / "task.yaml", 'name: mc\ntype: mul\npath: data\n'
                 'file-pattern: {main: "**/test.jsonl", none: "**/nothing.jsonl"}\n')
    [result] = evaluate_tasks(model, tokenizer, load_tasks([str(yaml)]),
                              output_path=str(tmp_path / "out"))
    out = capsys.readouterr().out
    where = data / "test.jsonl"
    assert f"skipped {where}:2: not JSON" in out
    assert f"skipped {where}:3: label 2 is out of range for 2 choices" in out
    assert f"skipped {where}:4: missing field 'choices_pretokenized'" in out
    assert "3 example(s) skipped" in out and "no files match" in out
    entry = result["groups"]["main"]["files"]["prompt-a/test.jsonl"]
    assert entry["examples"] == 2 and len(entry["skipped"]) == 3
    [written] = (tmp_path / "out").iterdir()
    saved = json.loads(written.read_text(encoding="utf-8"))["tasks"][0]
    predictions = saved["groups"]["main"]["files"]["prompt-a/test.jsonl"]["predictions"]
    assert [p["label"] for p in predictions] == [0, 1]
    right = sum(p["prediction"] == p["label"] for p in predictions)
    assert saved["groups"]["main"]["stats"]["Accuracy"]["max"] == 50.0 * right


def test_pile_bits_per_byte_per_subset(model, tokenizer, tmp_path):
    docs = [("The capital of France is Paris. A cat sat on a mat.", "A"),
            ("Two plus three is five. Red and blue are colours.", "B"), ("", "A"),
            ("法国的首都是巴黎。日本的首都是东京。", "A")]
    path = write(tmp_path / "test_tokenized.jsonl", "".join(
        json.dumps({"text_pretokenized": t, "meta": {"pile_set_name": s}}, ensure_ascii=False)
        + "\n" for t, s in docs))
    settings = dict(name="p", type="lm", path=str(tmp_path), max_seq_length=12,
                    generation_length=4, use_task_mask=True)
    pile = Pile(model, tokenizer, PileConfig(**settings))
    data = pile.read(str(path))
    assert data.skipped == [f"{path}: an empty document"]
    bpb = pile.score(pile.predict(data.examples, data), data)

    alone = LanguageModelTask(model, tokenizer, LanguageModelTaskConfig(**settings))
    loss = []
    for i, (text, _) in enumerate(docs):  # each document as a file of its own
        if text:
            one = alone.read(str(write(tmp_path / f"{i}.txt", text)))
            loss.append(sum(alone.predict(one.examples, one)))
    size = [len(t.encode("utf-8")) for t, _ in docs if t]
    assert bpb == pytest.approx({"BPB[A]": (loss[0] + loss[2]) / (size[0] + size[2]) / math.log(2),
                                 "BPB[B]": loss[1] / size[1] / math.log(2)}, rel=1e-5)


def test_mmlu_reports_an_overall_group(model, tokenizer, tmp_path, capsys):
    for group, n in (("stem", 3), ("humanities", 5)):
        (tmp_path / "MMLU" / group).mkdir(parents=True)
        for subject in ("a", "b"):
            write(tmp_path / "MMLU" / group / f"{subject}.json", "".join(json.dumps(
                {"inputs_pretokenized": f"Question {i}? Answer: (", "choices_pretokenized":
                 ["A", "B", "C", "D"], "label": i % 4}) + "\n" for i in range(n)))
    yaml = write(tmp_path / "mmlu.yaml", 'name: MMLU\ntype: mul\nmodule: tasks.mmlu.task.MMLU\n'
                 'path: MMLU\nfile-pattern: {stem: "stem/*.json",\n'
                 '               humanities: "humanities/*.json"}\n')
    [result] = evaluate_tasks(model, tokenizer, load_tasks([str(yaml)]))
    files = [(f["metrics"], f["examples"]) for g in result["groups"].values()
             for f in g["files"].values()]
    assert [n for _, n in files] == [3, 3, 5, 5]  # the groups in the order of the YAML
    assert result["overall"] == group_stats(files)
    assert group_lines("Overall", result["overall"])[0] in capsys.readouterr().out


# ---- missing data, --limit, the summary and what the results file says ----------------------

def test_missing_data_is_one_line_unless_allowed(model, tokenizer, tmp_path):
    yaml = write(tmp_path / "t.yaml", "name: t\ntype: mul\npath: nowhere\n")
    with pytest.raises(UsageError) as error:
        evaluate_tasks(model, tokenizer, [yaml])
    assert str(error.value).startswith(f"{yaml}: the data folder {tmp_path / 'nowhere'} does "
                                       "not exist; ")
    assert "\n" not in str(error.value)
    [result] = evaluate_tasks(model, tokenizer, [yaml], output_path=str(tmp_path / "out"),
                              allow_missing=True)
    assert result["groups"] == {}
    [written] = (tmp_path / "out").iterdir()
    saved = json.loads(written.read_text(encoding="utf-8"))
    assert saved["missing"] == [{"task": "t", "yaml": str(yaml),
                                 "path": str(tmp_path / "nowhere")}]


def test_limit_takes_the_first_examples_of_each_file(model, tokenizer, tmp_path):
    good = {"inputs_pretokenized": "Two plus three is", "choices_pretokenized": ["five", "red"],
            "label": 0}
    (tmp_path / "d").mkdir()
    for name in ("a", "b"):  # line 2 is bad: the first two examples are lines 1 and 3
        write(tmp_path / "d" / f"{name}.jsonl",
              "\n".join([json.dumps(good), "{bad"] + [json.dumps(good)] * 3) + "\n")
    yaml = write(tmp_path / "t.yaml", 'name: t\ntype: mul\npath: d\nfile-pattern: "*.jsonl"\n')
    [result] = evaluate_tasks(model, tokenizer, [yaml], limit=2)
    for name in ("a", "b"):
        entry = result["groups"]["all"]["files"][f"{name}.jsonl"]
        where = tmp_path / "d" / f"{name}.jsonl"
        assert entry["examples"] == 2 and entry["skipped"] == [f"{where}:2: not JSON (Expecting "
                                                                "property name enclosed in double "
                                                                "quotes)"]
        assert [p["line"] for p in entry["predictions"]] == [f"{where}:1", f"{where}:3"]
        first = entry["predictions"][0]["input"]
        assert first == {"ids": tokenizer.tokenize("Two plus three is"),
                         "text": tokenizer.decode(tokenizer.tokenize("Two plus three is"))}


def test_summary_on_a_hand_worked_example(model, tokenizer):
    task = MultiChoiceTask(model, tokenizer, config(MultiChoiceTaskConfig))
    examples = [ChoiceExample([5], [[6], [7]], label, {}) for label in (0, 1, 0, 1)]
    predictions = [[0.0, -1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, -1.0]]  # 3 of 4 right
    data = FileData("f", examples)
    assert task.score(predictions, data) == {"Accuracy": 75.0}
    assert correct_counts(task, predictions, data) == {"Accuracy": 3}
    stderr = group_stderr([({"Accuracy": 3}, 4)])
    assert stderr == {"Accuracy": pytest.approx(100 * math.sqrt(0.75 * 0.25 / 3))}  # 25.0
    # pooled over files: 3 of 4 and 1 of 4 right is 4 of 8
    assert group_stderr([({"Accuracy": 3}, 4), ({"Accuracy": 1}, 4), ({}, 5)]) == {
        "Accuracy": pytest.approx(100 * math.sqrt(0.5 * 0.5 / 7))}
    result = {"name": "t", "groups": {"g": {"stats": group_stats([({"Accuracy": 75.0,
                                                                    "F1": 10.0}, 4)]),
                                            "stderr": stderr}}}
    rows = summary_rows([result])
    assert rows == [{"task": "t", "group": "g", "metric": "Accuracy", "value": 75.0,
                     "stderr": pytest.approx(25.0)},
                    {"task": "t", "group": "g", "metric": "F1", "value": 10.0, "stderr": None}]
    assert summary_lines(rows) == ["| Task | Group | Metric   |  Value |   | Stderr |",
                                   "|------|-------|----------|--------|---|--------|",
                                   "| t    | g     | Accuracy | 75.000 | ± | 25.000 |",
                                   "| t    | g     | F1       | 10.000 |   |        |"]


def test_results_file_says_what_made_it(model, tokenizer, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    item = {"inputs_pretokenized": "A cat", "choices_pretokenized": ["sat", "red"], "label": 0}
    write(tmp_path / "d" / "x.jsonl", json.dumps(item) + "\n")
    yaml = write(tmp_path / "t.yaml", "name: t\ntype: mul\npath: d\n")
    info = RunInfo(model=model.config, checkpoint="ckpt", iteration="7", tokenizer_type="sp",
                   tokenizer_model="tok.model", seed=3, version="9.9", commit=None)
    evaluate_tasks(model, tokenizer, [yaml], output_path=str(tmp_path / "out"), run_info=info)
    out = capsys.readouterr().out
    assert out.index("Group all Accuracy: ") < out.index("Finish 1 task in ") < out.index(
        "| Task | Group | Metric ")
    [written] = (tmp_path / "out").iterdir()
    saved = json.loads(written.read_text(encoding="utf-8"))
    run = saved["run"]
    assert run["model"] == dataclasses.asdict(model.config)
    assert run["checkpoint"] == {"folder": "ckpt", "iteration": "7"}
    assert run["tokenizer"] == {"type": "sp", "model": "tok.model"}
    assert (run["seed"], run["version"], run["commit"], run["limit"]) == (3, "9.9", None, None)
    assert run["started"] <= run["finished"]
    [row] = saved["summary"]
    assert (row["task"], row["group"], row["metric"]) == ("t", "all", "Accuracy")
    [prediction] = saved["tasks"][0]["groups"]["all"]["files"]["x.jsonl"]["predictions"]
    assert prediction["line"] == f"{tmp_path / 'd' / 'x.jsonl'}:1"
    assert prediction["input"]["ids"] == tokenizer.tokenize("A cat")
