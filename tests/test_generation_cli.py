"""`python -m glm130b.generate` on a tiny checkpoint made here: file mode and interactive mode
as subprocesses (exit codes, stdin), the rest in-process. Outputs are compared with
`fill_blanks` run here with the strategy the reference's arguments describe, same seed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import glm130b.generate as generate_module
from glm130b.cli import run
from glm130b.generate import PROMPT, main
from glm130b.initialize import initialize_model
from glm130b.generation import BaseStrategy, BeamSearchStrategy
from helpers import FRANCE, NO_MASK, TWO_BLANKS, Favouring, expected_fills, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOO_LONG = "one two three " * 30


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, tokenizer, args = tiny_checkpoint(tmp_path_factory.mktemp("generate"))
    return model, tokenizer, args + ["--out-seq-length", "40"]


def generate(args, stdin=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "glm130b.generate", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_file_mode_writes_one_file_per_prompt_with_id(setup, tmp_path):
    model, tokenizer, args = setup
    source = tmp_path / "prompts.txt"
    source.write_text(f"q1\t{FRANCE}\n\nq2\t{TWO_BLANKS}\nq3\t{NO_MASK}\n", encoding="utf-8")
    out = tmp_path / "samples"
    proc = generate(args + ["--input-source", str(source), "--output-path", str(out),
                            "--with-id", "--top_p", "0.7"])
    assert proc.returncode == 0, proc.stderr
    want = expected_fills(model, tokenizer, [FRANCE, TWO_BLANKS, NO_MASK], BaseStrategy,
                    top_k=0, top_p=0.7)
    assert sorted(p.name for p in out.iterdir()) == ["q1.txt", "q2.txt", "q3.txt"]
    for name, filled in zip(["q1", "q2", "q3"], want):
        assert (out / f"{name}.txt").read_text(encoding="utf-8") == filled.answers[0] + "\n"
        assert f"Output: {filled.plain[0]}" in proc.stdout  # piped: no colours
    assert "3/3" in proc.stderr  # the progress bar


@pytest.mark.slow
def test_interactive_mode_through_stdin(setup, tmp_path):
    model, tokenizer, args = setup
    out = tmp_path / "samples"
    proc = generate(args + ["--output-path", str(out), "--top_p", "0.7"],
                    stdin=f"{FRANCE}\n\n{TOO_LONG}\nstop\n")
    assert proc.returncode == 0, proc.stderr
    [filled] = expected_fills(model, tokenizer, [FRANCE], BaseStrategy, top_k=0, top_p=0.7)
    text = proc.stdout
    assert text.count(PROMPT.strip()) == 4  # asked again after each input
    assert f"Input: {FRANCE}" in text
    assert f"Generating: {filled.blanks[0][0]}" in text  # streamed
    assert f"Output: {filled.plain[0]}" in text and "\x1b" not in text
    assert "Taken time" in text and "Query should not be empty!" in text
    assert "error: input: text too long" in text  # and the session goes on to `stop`
    [written] = list(out.iterdir())
    assert written.name.startswith("The capital of Franc-")
    assert written.read_text(encoding="utf-8") == filled.answers[0] + "\n"


def test_beam_search_files_without_id_and_all_beams(setup, tmp_path, capsys):
    model, tokenizer, args = setup
    source = tmp_path / "prompts.txt"
    second = "The capital of France is [MASK] or [MASK]."  # same first 20 characters
    source.write_text(f"{FRANCE}\n{second}\n", encoding="utf-8")
    out = tmp_path / "samples"
    assert main(args + ["--input-source", str(source), "--output-path", str(out),
                        "--sampling-strategy", "BeamSearchStrategy", "--num-beams", "2",
                        "--length-penalty", "1.0", "--no-repeat-ngram-size", "3",
                        "--print-all-beams"]) == 0
    want = expected_fills(model, tokenizer, [FRANCE, second], BeamSearchStrategy, num_beams=2,
                    length_penalty=1.0, consider_end=True, no_repeat_ngram_size=3)
    # read as written: an answer may hold a carriage return (a byte piece), which
    # read_text would turn into a line feed
    files = sorted(out.iterdir(), key=lambda p: len(p.read_bytes().decode()))
    assert len(files) == 2 and all(p.name.startswith("The capital of Franc-") for p in files)
    contents = sorted(("".join(a + "\n" for a in f.answers) for f in want), key=len)
    assert [p.read_bytes().decode() for p in files] == contents
    printed = capsys.readouterr().out
    assert f"Output beam 1: {want[0].plain[1]}" in printed


@pytest.mark.parametrize("color, styled", [("always", True), ("never", False), ("auto", False)])
def test_color_flag(setup, tmp_path, capsys, color, styled):
    model, tokenizer, args = setup
    source = tmp_path / "prompts.txt"
    source.write_text(f"{FRANCE}\n", encoding="utf-8")
    assert main(args + ["--input-source", str(source), "--output-path", str(tmp_path / "out"),
                        "--top_k", "1", "--color", color]) == 0
    [want] = expected_fills(model, tokenizer, [FRANCE], BaseStrategy, top_k=1)
    out = capsys.readouterr().out  # not a terminal: auto writes no colours
    assert f"Output: {(want.styled if styled else want.plain)[0]}" in out
    assert ("\x1b[" in out) == styled


def test_a_blank_ends_at_eod(setup, tmp_path, capsys, monkeypatch):
    model, tokenizer, args = setup
    eod = tokenizer.get_command("eod")
    loaded = []

    def favouring_eod(*a):
        loaded.append(Favouring(initialize_model(*a), eod))
        return loaded[-1]

    monkeypatch.setattr(generate_module, "initialize_model", favouring_eod)
    source = tmp_path / "prompts.txt"
    source.write_text(f"q1\t{NO_MASK}\n", encoding="utf-8")
    assert main(args + ["--input-source", str(source), "--output-path", str(tmp_path / "out"),
                        "--with-id"]) == 0
    assert (tmp_path / "out" / "q1.txt").read_text(encoding="utf-8") == NO_MASK + "\n"
    assert loaded[0].calls == 1  # stopped at the first token, eod, not at --out-seq-length
    assert "[eod]" not in capsys.readouterr().out


def test_prompt_too_long_is_one_line_and_exit_code_2(setup, tmp_path, capsys):
    _, _, args = setup
    source = tmp_path / "prompts.txt"
    source.write_text(f"{FRANCE}\n{TOO_LONG}\n", encoding="utf-8")
    out = tmp_path / "samples"
    with pytest.raises(SystemExit) as exit:
        run(main, args + ["--input-source", str(source), "--output-path", str(out)])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {source}:2: text too long: ")
    assert err[0].endswith("tokens, more than --max-sequence-length 64")
    assert not out.exists()  # checked before the model loads: nothing written


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"],
    "deepspeed": ["-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", "29533",
                  "--module"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_ways_on_a_converted_checkpoint(setup, tmp_path, launcher):
    """The released-checkpoint path: reshard with convert_tp, then `torchrun --nproc_per_node 2`
    (or the DeepSpeed launcher) `-m glm130b.generate --model-parallel-size 2` writes what one
    process writes."""
    model, tokenizer, args = setup
    load = args.index("--load") + 1
    convert_tp = subprocess.run([sys.executable, "-m", "glm130b.checkpoint.convert_tp",
                                 "--input-folder", args[load], "--output-folder",
                                 str(tmp_path / "tp2"), "--target-tp", "2"],
                                capture_output=True, text=True)
    assert convert_tp.returncode == 0, convert_tp.stderr
    args = args[:load] + [str(tmp_path / "tp2")] + args[load + 1:]
    source = tmp_path / "prompts.txt"
    source.write_text(f"q1\t{FRANCE}\nq2\t{TWO_BLANKS}\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    proc = subprocess.run([sys.executable, *LAUNCHERS[launcher], "glm130b.generate", *args,
                           "--model-parallel-size", "2", "--input-source", str(source),
                           "--output-path", str(tmp_path / "out"), "--with-id", "--top_p", "0.7"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = expected_fills(model, tokenizer, [FRANCE, TWO_BLANKS], BaseStrategy, top_k=0, top_p=0.7)
    for name, filled in zip(["q1", "q2"], want):
        written = (tmp_path / "out" / f"{name}.txt").read_text(encoding="utf-8")
        assert written == filled.answers[0] + "\n"
