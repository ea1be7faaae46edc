import itertools
import json
import os
import re
import subprocess
import sys

import pytest

from glm130b.data import corpus, facts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CJK = re.compile(r"[\u4e00-\u9fff]")


def _docs(n, seed):
    return list(corpus.generate_corpus(n, seed))


def test_same_seed_same_documents():
    assert _docs(200, 7) == _docs(200, 7)


def test_different_seeds_differ():
    assert _docs(50, 1) != _docs(50, 2)


def test_does_not_touch_global_random_state():
    import random
    random.seed(0)
    expected = random.random()
    random.seed(0)
    _docs(20, 3)
    assert random.random() == expected


def test_both_languages_and_mixed_documents_present():
    docs = _docs(300, 0)
    english = [d for d in docs if not CJK.search(d)]
    chinese = [d for d in docs if CJK.search(d) and not re.search(r"[A-Za-z]{3,}", d)]
    mixed = [d for d in docs if CJK.search(d) and re.search(r"[A-Za-z]{3,}", d)]
    assert english and chinese and mixed
    assert all(d and "\n" not in d for d in docs)


def test_document_length_in_range():
    # Every template ends in "." or "。", and no table entry contains either.
    for doc in _docs(200, 5):
        n = len(re.findall(r"[.。]", doc))
        assert corpus.MIN_SENTENCES <= n <= 2 * corpus.MAX_SENTENCES


def test_every_row_renders_for_every_template():
    for rel, lang in itertools.product(facts.relations(), facts.LANGUAGES):
        templates = rel.templates(lang)
        assert len(templates) >= 3, (rel.name, lang)
        for row, (i, template) in itertools.product(rel.rows, enumerate(templates)):
            prompt, answer = facts.render(rel, row, lang, i)
            s, o = facts.subject(row, lang), facts.obj(row, lang)
            filled = template.format(s=s, o=o)
            filled = filled[:1].upper() + filled[1:]
            _, tail = facts.split_template(template)
            assert answer == o
            assert prompt and not prompt.endswith(o)
            assert prompt + answer + tail == filled == facts.sentence(rel, row, lang, i)


def test_tables_are_large_enough_and_bilingual():
    capital = facts.get_relation("capital")
    assert len(capital.rows) >= 40
    assert ("France", "法国", "Paris", "巴黎") in capital.rows
    assert len(set(capital.rows)) == len(capital.rows)
    for rel in facts.relations():
        for row in rel.rows:
            assert all(row), (rel.name, row)
        if rel.name not in ("addition", "subtraction", "month_number"):
            assert any(CJK.search(r.subject_zh) for r in rel.rows), rel.name
    assert facts.render(capital, capital.rows[capital.rows.index(
        ("France", "法国", "Paris", "巴黎"))], "zh", 0) == ("法国的首都是", "巴黎")


def test_arithmetic_answers_are_correct():
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b}
    zh_ops = {"加": "+", "减": "-"}
    for name in ("addition", "subtraction"):
        rows = facts.get_relation(name).rows
        assert len(rows) > 20
        for row in rows:
            a, op, b = row.subject_en.split()
            assert row.object_en == row.object_zh == str(ops[op](int(a), int(b)))
            za, zop, zb = re.fullmatch(r"(\d+)(加|减)(\d+)", row.subject_zh).groups()
            assert (za, zh_ops[zop], zb) == (a, op, b)
    assert facts.render(facts.get_relation("addition"), ("2 + 3", "2加3", "5", "5"), "en", 0) \
        == ("2 + 3 = ", "5")


def test_calendar_relations_follow_order():
    after = {r.subject_en: r.object_en for r in facts.get_relation("date_after").rows}
    before = {r.subject_en: r.object_en for r in facts.get_relation("date_before").rows}
    assert len(after) == 365
    assert after["February 28"] == "March 1" and after["December 31"] == "January 1"
    assert all(before[o] == s for s, o in after.items())
    months = {r.subject_en: r.object_zh for r in facts.get_relation("month_after").rows}
    assert months["December"] == "一月"
    weekdays = {r.subject_zh: r.object_en for r in facts.get_relation("weekday_after").rows}
    assert weekdays["星期日"] == "Monday"


def test_objects_gives_distinct_choices():
    assert len(facts.objects(facts.get_relation("continent"), "en")) == 6
    assert "巴黎" in facts.objects(facts.get_relation("capital"), "zh")


def test_bad_templates_rejected():
    with pytest.raises(ValueError):
        facts.Relation("bad", (facts.Row("a", "甲", "b", "乙"),), ("{o} is {s}.",), ("{s}是{o}。",))
    with pytest.raises(ValueError):
        facts.Relation("bad", (facts.Row("a", "甲", "b", "乙"),), ("{s} is {o} indeed.",),
                       ("{s}是{o}。",))


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "glm130b.data.corpus", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_cli_writes_jsonl_atomically(tmp_path):
    out = tmp_path / "corpus.jsonl"
    proc = _run_cli("--output", str(out), "--num-documents", "50", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]
    assert texts == _docs(50, 3)
    assert os.listdir(tmp_path) == ["corpus.jsonl"]
    summary = proc.stdout.strip().splitlines()[-1]
    for key, value in (("documents", 50), ("characters", sum(map(len, texts))),
                       ("bytes", out.stat().st_size)):
        assert f"{key}={value}" in summary
    assert "seconds=" in summary


def test_cli_txt_format(tmp_path):
    out = tmp_path / "corpus.txt"
    proc = _run_cli("--output", str(out), "--num-documents", "20", "--seed", "9",
                    "--format", "txt")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8").splitlines() == _docs(20, 9)


def test_cli_bad_output_directory(tmp_path):
    proc = _run_cli("--output", str(tmp_path / "missing" / "corpus.jsonl"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "missing").exists()
