"""Bad input to the inference side loses nothing and reaches nothing it should not: ids that
would name files outside --output-path, control characters in prompts (refused before the
model loads), request bodies that would end in a 500, an API key kept out of `ps`, and task
code imported only when it is the package's own, beside the YAML, or trusted. Each refusal is
one line; the expected lines are written out in full."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import glm130b.generate as generate_module
from glm130b.cli import run
from glm130b.errors import ConfigError, PromptError, UsageError
from glm130b.evaluate import main as evaluate_main
from glm130b.evaluation import MultiChoiceTask, evaluate_tasks, load_tasks
from glm130b.generate import GenerateConfig, Query, main as generate_main, output_file
from glm130b.serve import check_api_key_args, main as serve_main, parse_args as serve_args
from glm130b.serving import local_server
from helpers import FRANCE, NO_MASK, TWO_BLANKS, request, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("faults"))


def never_loaded(args, folder):
    """The model arguments with --load at a folder that holds no checkpoint: reaching the
    model would stop the run with a checkpoint error, not a prompt error."""
    load = args.index("--load") + 1
    return args[:load] + [str(folder / "no-checkpoint")] + args[load + 1:]


def tree(folder: Path) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def run_generate(args, capsys):
    with pytest.raises(SystemExit) as exit:
        run(generate_main, args)
    return exit.value.code, capsys.readouterr().err.strip().splitlines()


# ---- generate: ids and prompts checked before the model loads -----------------------------

BAD_LINES = [  # the input file's lines, and the message for it after "<file>:"
    ([f"../x\t{FRANCE}"],
     "1: id '../x' holds '/', '\\' or '..'; an id names a file in --output-path"),
    ([f"q1\t{FRANCE}", f"/abs\t{NO_MASK}"],
     "2: id '/abs' holds '/', '\\' or '..'; an id names a file in --output-path"),
    ([f"a\0b\t{FRANCE}"], "1: the id holds U+0000, a control character"),
    ([f"a\x1b[2Jb\t{FRANCE}"], "1: the id holds U+001B, a control character"),
    ([f"{'x' * 300}\t{FRANCE}"],
     "1: id of 300 bytes is too long for a file name (251 at most)"),
    ([f"\t{FRANCE}"], "1: --with-id expects 'id<TAB>prompt'"),  # the line is stripped first
    ([f"q1\t{FRANCE}", "", f"q1\t{NO_MASK}"],
     "3: id 'q1' is used on line 1 too; each id names one output file"),
    ([f"q1\t{FRANCE}", "q2\tThe capital\0 of France is [MASK]."],
     "2: the prompt holds U+0000, a control character; only tab is allowed"),
]


@pytest.mark.parametrize("lines, message", BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_with_id_a_bad_line_is_refused_before_the_model_and_nothing_is_written(
        setup, tmp_path, capsys, lines, message):
    _, _, args = setup
    source = tmp_path / "in" / "prompts.txt"
    source.parent.mkdir()
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = tree(tmp_path)
    code, err = run_generate(never_loaded(args, tmp_path) + [
        "--input-source", str(source), "--output-path", str(tmp_path / "in" / "out"),
        "--with-id"], capsys)
    assert (code, err) == (2, [f"error: {source}:{message}"])
    assert tree(tmp_path) == before  # not even the output folder


def test_the_same_arguments_would_fail_at_the_checkpoint(setup, tmp_path, capsys):
    """What the test above relies on: with good input, the run goes on to load the model,
    and the missing checkpoint stops it there."""
    _, _, args = setup
    source = tmp_path / "prompts.txt"
    source.write_text(f"q1\t{FRANCE}\n", encoding="utf-8")
    code, err = run_generate(never_loaded(args, tmp_path) + [
        "--input-source", str(source), "--output-path", str(tmp_path / "out"), "--with-id"],
        capsys)
    assert code == 1 and len(err) == 1 and "no-checkpoint" in err[0], err


def test_the_last_guard_refuses_a_path_outside_the_output_folder(tmp_path):
    """Should an id ever pass the checks, output_file still will not leave the folder."""
    folder = tmp_path / "out"
    folder.mkdir()
    for ident in ("../escape", "sub/../../escape"):
        query = Query("text", None, "prompts.txt:7", ident)
        with pytest.raises(PromptError) as error:
            output_file(folder, query)
        assert str(error.value) == (f"prompts.txt:7: {folder / (ident + '.txt')} lies outside "
                                    f"--output-path {folder}; not written")
    assert tree(tmp_path) == {"out"}


@pytest.mark.slow
def test_a_nul_in_the_third_of_five_prompts_stops_the_command_before_the_model(setup,
                                                                             tmp_path):
    _, _, args = setup
    source = tmp_path / "prompts.txt"
    prompts = [FRANCE, TWO_BLANKS, "Two plus\0 three is", NO_MASK, FRANCE]
    source.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "glm130b.generate",
                           *never_loaded(args, tmp_path), "--input-source", str(source),
                           "--output-path", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {source}:3: the prompt holds U+0000, a control character; only tab is allowed"]
    assert proc.stdout == "" and tree(tmp_path) == {"prompts.txt"}


def test_each_batch_is_written_as_it_finishes(setup, tmp_path, monkeypatch, capsys):
    """A failure in the second batch leaves the first batch's files in place."""
    _, _, args = setup
    real, calls = generate_module.fill_blanks, []

    def second_fails(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the second batch fails")
        return real(*a, **kw)

    monkeypatch.setattr(generate_module, "fill_blanks", second_fails)
    source = tmp_path / "prompts.txt"
    source.write_text("".join(f"q{k}\t{t}\n" for k, t in
                              enumerate([FRANCE, NO_MASK, TWO_BLANKS, FRANCE], 1)),
                      encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="the second batch fails"):
        generate_main(args + ["--input-source", str(source), "--output-path", str(out),
                              "--with-id", "--max-inference-batch-size", "2"])
    assert sorted(p.name for p in out.iterdir()) == ["q1.txt", "q2.txt"]
    assert all(p.read_text(encoding="utf-8").endswith("\n") for p in out.iterdir())


def test_a_tab_inside_a_prompt_is_kept(setup):
    _, tokenizer, _ = setup
    query = generate_module.parse_query("q1\tRed\tand blue", GenerateConfig(with_id=True),
                                        tokenizer, 64, "p:1")
    assert (query.id, query.text) == ("q1", "Red\tand blue")


# ---- serve: every malformed body is a 400 ----------------------------------------------------

@pytest.fixture(scope="module")
def server(setup):
    model, tokenizer, _ = setup
    with local_server(model, tokenizer, model_name="tiny") as srv:
        yield srv


DEEP = "invalid JSON: nested deeper than 64 levels"
MALFORMED = [  # raw body, the whole error message
    (b"[" * 1000 + b"]" * 1000, DEEP),
    (b"[" * 100000, DEEP),
    (b'{"prompt": "x", "stop": ' + b"[" * 64 + b'"a"' + b"]" * 64 + b"}", DEEP),
    (b'{"prompt": "\xc3("}', "invalid JSON: 'utf-8' codec can't decode byte 0xc3 in position "
                            "12: invalid continuation byte"),
    (b"5", "the body must be a JSON object"),
    (b"1" * 5000, "invalid JSON: Exceeds the limit (4300 digits) for integer string "
                  "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to "
                  "increase the limit"),
    (b'{"prompt": "x", "seed": ' + b"9" * 4000 + b"}",
     "seed: Input should be less than 9223372036854775808"),
    (b'{"prompt": "x", "n": ' + b"9" * 4000 + b"}",
     "the request needs " + "9" * 4000 + " rows (prompts x n x beams); this server decodes at "
     "most 32 at once"),
    (b'{"prompt": "x", "temperature": NaN}', "invalid JSON: NaN is not JSON"),
    (b'{"prompt": "x", "temperature": 1e999}', "temperature: Input should be a finite number"),
    (b'{"prompt": "\\ud800"}', "invalid JSON: a string holds an unpaired surrogate"),
    (b'{"\\udfff": 1}', "invalid JSON: a string holds an unpaired surrogate"),
]


@pytest.mark.parametrize("body, message", MALFORMED, ids=[m[:40] for _, m in MALFORMED])
def test_malformed_bodies_get_a_400_in_the_error_shape(server, body, message):
    status, answer = request(server.url, "/v1/completions", data=body)
    assert status == 400
    assert answer == {"error": {"message": message, "type": "invalid_request_error",
                                "param": answer["error"]["param"], "code": 400}}


def test_nested_to_the_limit_parses(server):
    status, answer = request(server.url, "/v1/completions",
                             data=b'{"prompt": "x", "stop": ' + b"[" * 63 + b'"a"' + b"]" * 63
                             + b"}")
    assert status == 400 and answer["error"]["message"].startswith("stop: ")  # the schema's


def test_options_that_used_to_overflow_in_the_model_are_refused_or_safe(server):
    beam = {"text": "x [MASK]", "sampling_strategy": "BeamSearchStrategy", "num_beams": 2,
            "max_tokens": 4}
    for penalty in (1e300, -1e300):
        status, answer = request(server.url, "/v1/fill",
                                 data=json.dumps(dict(beam, length_penalty=penalty)).encode())
        assert status == 400 and answer["error"]["message"].startswith("length_penalty: ")
    body = {"prompt": FRANCE, "temperature": 1e-300, "max_tokens": 3, "seed": 1}
    status, tiny = request(server.url, "/v1/completions", data=json.dumps(body).encode())
    status0, greedy = request(server.url, "/v1/completions",
                              data=json.dumps(dict(body, temperature=0)).encode())
    assert status == status0 == 200
    assert tiny["choices"][0]["filled"] == greedy["choices"][0]["filled"]


class BrokenTokenizer:
    """The tokenizer with a fault in it: a real internal error, not the client's."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def tokenize(self, text):
        raise RuntimeError("tokenizer broke")


def test_an_internal_fault_is_a_500_with_the_request_id_of_its_log_line(setup, caplog):
    model, tokenizer, _ = setup
    caplog.set_level(logging.ERROR, logger="glm130b.serve")
    with local_server(model, BrokenTokenizer(tokenizer)) as srv:
        status, answer = request(srv.url, "/v1/completions", data=b'{"prompt": "x"}')
    assert status == 500
    ident = answer["error"]["request_id"]
    assert answer == {"error": {
        "message": f"internal error (RuntimeError); the server log has request {ident}",
        "type": "server_error", "param": None, "code": 500, "request_id": ident}}
    [record] = [r for r in caplog.records if r.name == "glm130b.serve"]
    assert record.getMessage() == f"request {ident}: internal error on POST /v1/completions"
    assert "tokenizer broke" in caplog.text  # the traceback, in the log only


def test_a_decoding_fault_names_the_request_the_scheduler_logged(setup, caplog):
    model, tokenizer, _ = setup
    caplog.set_level(logging.INFO, logger="glm130b.serve")
    with local_server(model, tokenizer) as srv:
        def broken(*_):
            raise RuntimeError("the device went away")
        srv.scheduler.batch.prefill = broken
        status, answer = request(srv.url, "/v1/completions",
                                 data=b'{"prompt": "x", "max_tokens": 2}')
    assert status == 500
    ident = answer["error"]["request_id"]
    assert answer["error"]["message"] == "decoding failed: the device went away"
    assert f"request {ident}: 500 decoding failed: the device went away" in caplog.text


# ---- serve: the API key kept out of `ps` ---------------------------------------------------

def key_of(argv, capsys):
    key = check_api_key_args(serve_args(argv))
    return key, capsys.readouterr().err.strip().splitlines()


def test_api_key_from_the_environment_a_file_or_with_a_warning_the_command_line(
        tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GLM_API_KEY", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert key_of([], capsys) == (None, [])
    monkeypatch.setenv("GLM_API_KEY", "from-env")
    assert key_of([], capsys) == ("from-env", [])
    keyfile = tmp_path / "key"
    keyfile.write_text("  from-file \nsecond line\n", encoding="utf-8")
    assert key_of(["--api-key-file", str(keyfile)], capsys) == ("from-file", [])
    assert key_of(["--api-key", "visible"], capsys) == ("visible", [
        "warning: --api-key on the command line is visible to every user of this machine "
        "(ps); use GLM_API_KEY or --api-key-file"])
    keyfile.write_text("\n", encoding="utf-8")
    with pytest.raises(UsageError) as error:
        key_of(["--api-key-file", str(keyfile)], capsys)
    assert str(error.value) == (f"--api-key-file {keyfile}: the API key is empty (give none "
                                "to serve without one)")


def test_a_missing_key_file_is_one_line_before_the_model(setup, tmp_path, capsys):
    _, _, args = setup
    missing = tmp_path / "no-such-key"
    with pytest.raises(SystemExit) as exit:
        run(serve_main, never_loaded(args, tmp_path) + ["--api-key-file", str(missing)])
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --api-key-file {missing}: cannot read it: No such file or directory"]


# ---- evaluate: task code imported only when trusted -----------------------------------------

TASK_CODE = """from pathlib import Path
from glm130b.evaluation import MultiChoiceTask
Path({marker!r}).write_text("imported")


class {name}(MultiChoiceTask):
    pass
"""


def task_module(folder: Path, module: str, name: str, marker: Path) -> Path:
    """`folder/<module>.py` defining task class `name`, which writes `marker` when imported."""
    path = folder / f"{module}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TASK_CODE.format(marker=str(marker), name=name), encoding="utf-8")
    return path


def task_yaml(path: Path, module: str, extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: t\ntype: mul\npath: d\nmodule: {module}\n{extra}", encoding="utf-8")
    return path


def untrusted(yaml: Path, module: str) -> str:
    return (f"{yaml}: field 'module': {module!r} is neither a glm130b task class nor a module "
            f"in {yaml.resolve().parent / 'tasks'}; importing it would run its code, so it "
            "needs --trust-task-code (trust_task_code=True)")


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A package `evil_tasks` on sys.path whose module writes a marker file when imported."""
    marker = tmp_path / "imported-evil"
    task_module(tmp_path / "lib" / "evil_tasks", "evil", "EvilTask", marker)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    yield marker
    for name in ("evil_tasks", "evil_tasks.evil"):
        sys.modules.pop(name, None)


def test_an_untrusted_module_is_refused_without_being_imported(tmp_path, library):
    yaml = task_yaml(tmp_path / "task.yaml", "evil_tasks.evil.EvilTask")
    with pytest.raises(ConfigError) as error:
        load_tasks([str(yaml)])
    assert str(error.value) == untrusted(yaml, "evil_tasks.evil.EvilTask")
    assert not library.exists() and "evil_tasks.evil" not in sys.modules
    with pytest.raises(ConfigError):
        evaluate_tasks(None, None, [str(yaml)])  # the same check on the Python API
    assert not library.exists()
    [task] = load_tasks([str(yaml)], trust_task_code=True)
    assert task.cls.__name__ == "EvilTask" and issubclass(task.cls, MultiChoiceTask)
    assert library.read_text() == "imported"


def test_every_file_is_checked_before_any_task_code_is_imported(tmp_path, library):
    beside = tmp_path / "imported-beside"
    task_module(tmp_path / "tasks", "mine", "MyTask", beside)
    task_yaml(tmp_path / "a.yaml", "tasks.mine.MyTask")
    bad = task_yaml(tmp_path / "b.yaml", "evil_tasks.evil.EvilTask")
    with pytest.raises(ConfigError) as error:
        load_tasks([str(tmp_path)])
    assert str(error.value) == untrusted(bad, "evil_tasks.evil.EvilTask")
    assert not beside.exists() and not library.exists()
    # trusted, a file that is wrong in a field is still refused before its import
    task_yaml(tmp_path / "b.yaml", "evil_tasks.evil.EvilTask", "micro-batch-size: eight\n")
    with pytest.raises(ConfigError) as error:
        load_tasks([str(tmp_path)], trust_task_code=True)
    assert str(error.value) == (f"{bad}: field 'micro-batch-size' must be an integer, "
                                "got 'eight'")
    assert not beside.exists() and not library.exists()


def test_a_module_in_tasks_beside_the_yaml_is_loaded_from_that_file(tmp_path, monkeypatch):
    marker, decoy = tmp_path / "imported-beside", tmp_path / "imported-decoy"
    code = task_module(tmp_path / "suite" / "tasks" / "sub", "mine", "MyTask", marker)
    yaml = task_yaml(tmp_path / "suite" / "task.yaml", "tasks.sub.mine.MyTask")
    # the same dotted path on sys.path is not what gets imported
    task_module(tmp_path / "lib" / "tasks" / "sub", "mine", "MyTask", decoy)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    [task] = load_tasks([str(yaml)])
    assert task.cls.__name__ == "MyTask" and marker.read_text() == "imported"
    assert sys.modules[task.cls.__module__].__file__ == str(code) and not decoy.exists()
    other = task_yaml(tmp_path / "suite" / "other.yaml", "tasks.sub.absent.MyTask")
    with pytest.raises(ConfigError) as error:
        load_tasks([str(other)])
    assert str(error.value) == untrusted(other, "tasks.sub.absent.MyTask")
    assert not decoy.exists()


def test_module_paths_that_are_not_dotted_names_are_refused(tmp_path):
    for module in ("../tasks/x.Y", "tasks..x.Y", "x", "tasks/x.Y"):
        yaml = task_yaml(tmp_path / "task.yaml", f'"{module}"')
        with pytest.raises(ConfigError) as error:
            load_tasks([str(yaml)], trust_task_code=True)
        assert str(error.value) == (f"{yaml}: field 'module': {module!r} is not a dotted path "
                                    "to a class (package.module.Class)")


def test_the_evaluate_command_refuses_then_trusts(tmp_path, library, capsys):
    yaml = task_yaml(tmp_path / "task.yaml", "evil_tasks.evil.EvilTask")
    tokenizer = ["--tokenizer-type", "sentencepiece", "--tokenizer-model",
                 str(tmp_path / "missing.model")]
    with pytest.raises(SystemExit) as exit:
        run(evaluate_main, ["--task", str(yaml)] + tokenizer)
    assert exit.value.code == 1 and not library.exists()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {untrusted(yaml, 'evil_tasks.evil.EvilTask')}"]
    # trusted: the task loads, and the run goes on to the model (no arguments for one here)
    with pytest.raises(SystemExit) as exit:
        run(evaluate_main, ["--task", str(yaml), "--trust-task-code", "--allow-missing"]
            + tokenizer)
    assert exit.value.code == 1 and library.read_text() == "imported"
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: missing model arguments --num-layers"), line
