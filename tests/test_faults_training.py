"""Nothing lost under faults, on the training side: a run is never overwritten, a full disk
during a save keeps `latest` and stops every rank with one line, damaged resume files are one
line naming them, trainers end with their launcher, leftovers of interrupted saves are removed
at the next start, and the train log is cut back on a resume. Runs are tiny and single-process
where the fault allows; one base run is copied for the resume cases."""
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glm130b import files
from glm130b.checkpoint.deepspeed_layout import read_meta
from glm130b.checkpoint.sat import atomic_torch_save
from glm130b.errors import CheckpointError
from glm130b.tools.fault_drill import DiskFault, survivors
from glm130b.training.start import cut_log, prepare_save_folder
from helpers import (REPO, TRAIN_ENV, logged_iterations, losses, pretrain,
                     train_args)

INJECT = "glm130b.tools.fault_drill inject"
DROPOUT = dict(hidden_dropout=0.1, attention_dropout=0.1)  # resumes must restore the streams


@pytest.fixture(scope="module")
def base(data, tmp_path_factory):
    """An uninterrupted run of 4 iterations with checkpoints at 2 and 4."""
    save = tmp_path_factory.mktemp("base") / "run"
    pretrain(train_args(data, save=save, save_interval=2, **DROPOUT))
    return save


def copy_of(base: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base, run)
    return run


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_line_failure(out) -> str:
    """The error line of a run that must fail with exit code 1 and no traceback of ours."""
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and out.stderr.strip().splitlines()[-1] == errors[0], out.stderr
    return errors[0]


@pytest.mark.slow
def test_a_checkpoint_without_its_metadata_is_refused_and_left_as_it_was(data, base, tmp_path):
    run = copy_of(base, tmp_path)
    (run / "global_step4" / "glm130b_training.json").unlink()
    before = contents(run)
    out = pretrain(train_args(data, save=run, load=run, train_iters=6), check=False)
    assert one_line_failure(out) == (
        f"error: {run}/global_step4/glm130b_training.json: missing; global_step4 holds "
        "DeepSpeed's training files, which cannot be resumed without it (nor taken for "
        "reference-layout weights); restore the file")
    assert contents(run) == before


@pytest.mark.slow
def test_a_save_folder_holding_a_later_iteration_is_refused_unless_overwrite(data, base,
                                                                             tmp_path):
    run = copy_of(base, tmp_path)
    before = contents(run)
    out = pretrain(train_args(data, save=run), check=False)
    assert one_line_failure(out) == (
        f"error: {run} already holds checkpoints up to iteration 4 (global_step4), later than "
        f"iteration 0 where this run starts; resume it with --load {run}, choose another "
        "--save folder, or pass --overwrite-checkpoints to remove them")
    assert contents(run) == before

    # `latest` moved back (a rollback): the newer checkpoint is kept unless told otherwise.
    (run / "latest").write_text("global_step2\n")
    out = pretrain(train_args(data, save=run, load=run, save_interval=2, **DROPOUT),
                   check=False)
    assert one_line_failure(out) == (
        f"error: {run}/global_step4 is complete but 'latest' names global_step2: a save "
        "interrupted just before 'latest' moved, or 'latest' moved back; to resume from it "
        f"write global_step4 into {run}/latest, or pass --overwrite-checkpoints to remove it")
    out = pretrain(train_args(data, save=run, load=run, save_interval=2, overwrite_checkpoints=True,
                              **DROPOUT))
    assert "removed from" in out.stdout and "resumed at iteration 2" in out.stdout
    # The log is cut back to the resumed iteration: each iteration once, the cut lines kept.
    log = run / "train_log.jsonl"
    assert logged_iterations(log) == [1, 2, 3, 4]
    assert logged_iterations(run / "train_log.jsonl.bak") == [3, 4]
    assert losses(log) == losses(base / "train_log.jsonl")  # resumed exactly


DAMAGES = {"rng-empty": ("rng_state_0000.pt", 0), "rng-truncated": ("rng_state_0000.pt", 400),
           "metadata-empty": ("glm130b_training.json", 0),
           "metadata-truncated": ("glm130b_training.json", 100),
           "optimizer-empty": ("zero_pp_rank_0_mp_rank_00_optim_states.pt", 0),
           "optimizer-truncated": ("zero_pp_rank_0_mp_rank_00_optim_states.pt", 5000)}


def expected_damage(path: Path, kept: int) -> str:
    if kept == 0:
        return f"error: {path}: empty (0 bytes), the checkpoint is damaged"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as e:
            return (f"error: {path}: damaged, not JSON ({e.msg}: line {e.lineno} "
                    f"column {e.colno})")
    return f"error: {path}: truncated or corrupt, not a whole torch file ("


@pytest.mark.slow
@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_resume_file_is_one_line_naming_it(data, base, tmp_path, case):
    name, kept = DAMAGES[case]
    run = copy_of(base, tmp_path)
    victim = run / "global_step4" / name
    victim.write_bytes(victim.read_bytes()[:kept])
    out = pretrain(train_args(data, save=run, load=run, train_iters=6), check=False)
    line, expected = one_line_failure(out), expected_damage(victim, kept)
    assert line == expected or expected.endswith("(") and line.startswith(expected), line


@pytest.mark.slow
def test_a_full_disk_during_a_save_keeps_latest_and_the_next_start_resumes(data, base, tmp_path):
    run = tmp_path / "run"
    size = (base / "global_step4" / "mp_rank_00_model_states.pt").stat().st_size
    byte = random.Random(0).randrange(size)  # somewhere in the first file of the save
    argv = train_args(data, save=run, save_interval=2, **DROPOUT)
    out = pretrain(["--iteration", "4", "--at-byte", str(byte), "--free-bytes", "1000", "--",
                    *argv], module=INJECT, check=False)
    line = one_line_failure(out)
    assert re.fullmatch(
        rf"error: saving {run}/global_step4 failed \(\[Errno 28\] No space left on device\); "
        r"removed it, 'latest' still names global_step2; a checkpoint needs about "
        r"2\.\d MB, 1\.0 kB is free there", line), line
    assert re.search(rf"warning: {run} has 1\.0 kB free, less than the 2\.\d MB a checkpoint "
                     "takes; saving iteration 4 may fail", out.stderr)
    assert (run / "latest").read_text().strip() == "global_step2"
    assert not (run / "global_step4").exists() and not list(run.rglob(".*.tmp*"))

    # What a kill would have left: a temporary file and a folder newer than `latest`.
    (run / "global_step2" / ".rng_state_0000.pt.tmp99999").write_bytes(b"half")
    (run / "global_step6").mkdir()
    (run / "global_step6" / "mp_rank_00_model_states.pt").write_bytes(b"half")
    out = pretrain(train_args(data, save=run, load=run, save_interval=2, **DROPOUT))
    assert "resumed at iteration 2" in out.stdout
    assert not (run / "global_step6").exists() and not list(run.rglob(".*.tmp*"))
    assert (run / "latest").read_text().strip() == "global_step4"
    assert logged_iterations(run / "train_log.jsonl") == [1, 2, 3, 4]
    assert losses(run / "train_log.jsonl") == losses(base / "train_log.jsonl")


@pytest.mark.slow
def test_a_full_disk_on_one_rank_stops_every_rank(data, tmp_path):
    """Rank 1 fails to write; rank 0 wrote everything. Both leave DeepSpeed's save (and its
    barriers) together and exit with the same line; the first save's folder goes."""
    run = tmp_path / "run"
    out = pretrain(["--iteration", "2", "--at-byte", "1000", "--rank", "1", "--",
                    *train_args(data, save=run, save_interval=2)],
                   procs=2, module=INJECT, check=False)
    assert out.returncode != 0
    errors = {line for line in out.stderr.splitlines() if line.startswith("error:")}
    assert len(errors) == 1, out.stderr[-3000:]
    assert next(iter(errors)).startswith(
        f"error: saving {run}/global_step2 failed on rank 1 ([Errno 28] No space left on "
        "device); removed it, 'latest' still names nothing; a checkpoint needs about ")
    assert not [line for line in out.stderr.splitlines() if "glm130b/" in line and "File" in line]
    assert not (run / "global_step2").exists() and not (run / "latest").exists()


LAUNCHERS = {
    "pretrain.sh": lambda argv: ["bash", str(REPO / "scripts" / "pretrain.sh"), *argv],
    "torchrun": lambda argv: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              "--nproc_per_node", "1", "-m", "glm130b.pretrain", *argv],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_killing_the_launcher_leaves_no_trainer(data, tmp_path, launcher):
    """kill -9 of the launcher: the script (which execs the DeepSpeed launcher, whose per-node
    process then outlives it) or torchrun. Every trainer is gone within 10 seconds, having
    stopped as on SIGTERM: with a checkpoint of where it stood."""
    run = tmp_path / "run"
    argv = train_args(data, save=run, train_iters=100000, save_interval=1000)
    proc = subprocess.Popen(LAUNCHERS[launcher](argv), env=dict(TRAIN_ENV, GPUS="1"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log, deadline = run / "train_log.jsonl", time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (
                log.is_file() and log.read_text().count("\n") >= 2):
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert len(survivors(str(run))) >= 2  # the launcher and its trainer(s)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while survivors(str(run)) and time.time() < deadline:
            time.sleep(0.1)
        assert not survivors(str(run))
        assert "the launcher (pid" in proc.stderr.read() or launcher == "torchrun"
        assert read_meta(run)["iteration"] >= 2  # saved on the way out, and it loads
    finally:
        for pid in survivors(str(run)):  # this test's own processes, by id
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# -- the pieces, in process --------------------------------------------------------------------

@pytest.mark.parametrize("byte", [0, 100, 5000])
def test_a_full_disk_inside_torch_save_is_an_oserror_and_leaves_nothing(tmp_path, monkeypatch,
                                                                        byte):
    """torch's zip writer turns the failed write into a RuntimeError; the save raises the
    OSError it hides, and the temporary file goes."""
    monkeypatch.setattr(files, "open", DiskFault(1, byte, "enospc").open, raising=False)
    target = tmp_path / "global_step1" / "x.pt"
    target.parent.mkdir()
    with pytest.raises(OSError) as e:
        atomic_torch_save({"w": torch.randn(4000)}, target)
    assert e.value.errno == errno.ENOSPC
    assert not list(target.parent.iterdir())


def test_the_start_cleans_only_what_interrupted_saves_left(tmp_path):
    save = tmp_path / "run"
    for n, complete in ((2, True), (4, True), (6, False)):
        (save / f"global_step{n}").mkdir(parents=True)
        (save / f"global_step{n}" / "mp_rank_00_model_states.pt").write_bytes(b"x")
        if complete:
            (save / f"global_step{n}" / "glm130b_training.json").write_text("{}")
    (save / "latest").write_text("global_step4\n")
    (save / ".latest.tmp123").write_text("global_step6")
    (save / "global_step4" / ".rng_state_0000.pt.tmp77").write_bytes(b"x")
    prepare_save_folder(save, 4, overwrite=False)
    assert sorted(p.name for p in save.iterdir()) == ["global_step2", "global_step4", "latest"]
    assert sorted(p.name for p in (save / "global_step4").iterdir()) == [
        "glm130b_training.json", "mp_rank_00_model_states.pt"]
    with pytest.raises(CheckpointError, match="already holds checkpoints up to iteration 4"):
        prepare_save_folder(save, 2, overwrite=False)  # from another run's iteration 2
    prepare_save_folder(save, 2, overwrite=True)
    assert sorted(p.name for p in save.iterdir()) == ["global_step2", "latest"]
    assert (save / "latest").read_text().strip() == "global_step2"


def test_the_log_is_cut_back_to_the_start(tmp_path):
    log = tmp_path / "train_log.jsonl"
    records = [json.dumps({"iteration": i, "loss": 1.0 / i}) + "\n" for i in range(1, 6)]
    log.write_text("".join(records) + '{"iteration": 6, "lo')  # torn by a kill
    cut_log(log, 3)
    assert log.read_text() == "".join(records[:3])
    assert (tmp_path / "train_log.jsonl.bak").read_text() == "".join(records[3:]) + \
        '{"iteration": 6, "lo\n'
    cut_log(log, 3)  # nothing more to cut
    assert (tmp_path / "train_log.jsonl.bak").read_text().count("\n") == 3


def test_a_complete_checkpoint_that_latest_does_not_name_is_refused(tmp_path):
    """A kill after the metadata, before `latest`: the checkpoint is whole; say so, keep it."""
    save = tmp_path / "run"
    (save / "global_step2").mkdir(parents=True)
    (save / "global_step2" / "glm130b_training.json").write_text("{}")
    with pytest.raises(CheckpointError, match="global_step2 is complete but no 'latest' names "
                                              "it: a save interrupted just before"):
        prepare_save_folder(save, 0, overwrite=False)
    assert (save / "global_step2").is_dir()
