"""A fault drill for training: run a tiny training again and again with faults injected at random
points, resume after each as a person would, and check that nothing was lost.

    python -m glm130b.tools.fault_drill --runs 6 --output fault-drill  # scripts/fault_drill.sh

Faults: kill -9 while training (of the launcher, in runs with two processes), kill -9 at a
random byte of a save, a full disk (ENOSPC) at a random byte of a save, and a damaged resume
file (a random file of the latest checkpoint emptied or truncated). After each: `latest` must
load, never name an earlier checkpoint than before, no trainer may outlive its launcher, a
full disk and a damaged file must be one line with a non-zero exit (the damaged file named;
it is then restored, as from a backup), and the finished run must log every iteration once,
with the losses of an uninterrupted run. Prints the count of runs and of those that lost
data, and writes a JSON summary.

`inject` is the injector the drill and the tests use: it runs `glm130b.pretrain` (as
`python -m` would) with every atomic write counted from the first one into the save of an
iteration, failing with ENOSPC or killing the process at a given byte:

    python -m glm130b.tools.fault_drill inject --iteration 4 --at-byte 1000 --fault enospc \\
        [--rank R] [--free-bytes N] -- PRETRAIN_ARGS...
"""
from __future__ import annotations

import argparse
import builtins
import errno
import json
import os
import random
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .. import files
from ..checkpoint.deepspeed_layout import (META, damaged_files, is_training_checkpoint,
                                           read_meta, step_folders, tag_folder)
from ..cli import config_from_args, run
from ..errors import GLMError

KINDS = ("kill-train", "kill-save", "enospc-save", "damage")
MODEL = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
         "--inner-hidden-size", "170", "--vocab-size", "1024", "--max-sequence-length", "64",
         "--hidden-dropout", "0.1", "--attention-dropout", "0.1"]
RECIPE = ["--seq-length", "64", "--length-per-sample", "60", "--aggregated-samples-per-sequence",
          "2", "--micro-batch-size", "2", "--global-batch-size", "8", "--lr", "3e-3",
          "--log-interval", "1", "--zero-stage", "1", "--clip-grad", "0.5"]
ORPHAN_WAIT_S = 10.0


# -- the injector ------------------------------------------------------------------------------

class DiskFault:
    """Counts the bytes of every atomic write from the first one into `global_stepN`, and at
    `at_byte` fails that write with ENOSPC (the disk stays full) or kills the process."""

    def __init__(self, iteration: int, at_byte: int, fault: str):
        self.marker, self.at_byte, self.fault = f"global_step{iteration}", at_byte, fault
        self.written, self.armed = 0, False

    def open(self, path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        self.armed = self.armed or ("w" in mode and self.marker in str(path))
        return _CountedFile(f, self) if self.armed else f

    def write(self, f, data):
        room = self.at_byte - self.written
        if len(data) > room:
            f.write(data[:max(room, 0)])
            f.flush()
            self.written = max(self.written, self.at_byte)
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return f.write(data)


class _CountedFile:
    def __init__(self, f, fault: DiskFault):
        self._f, self._fault = f, fault

    def write(self, data):
        return self._fault.write(self._f, data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def inject(argv) -> None:
    p = argparse.ArgumentParser(prog="python -m glm130b.tools.fault_drill inject")
    p.add_argument("--iteration", type=int, required=True, help="the save to break")
    p.add_argument("--at-byte", type=int, required=True)
    p.add_argument("--fault", choices=("enospc", "kill"), default="enospc")
    p.add_argument("--rank", type=int, default=0, help="the rank that meets the fault")
    p.add_argument("--free-bytes", type=int, help="what the disk reports free (a full disk)")
    p.add_argument("pretrain_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if int(os.environ.get("RANK", "0")) == args.rank:
        files.open = DiskFault(args.iteration, args.at_byte, args.fault).open
        if args.free_bytes is not None:
            usage = shutil.disk_usage
            shutil.disk_usage = lambda path: usage(path)._replace(free=args.free_bytes)
    rest = args.pretrain_args[1:] if args.pretrain_args[:1] == ["--"] else args.pretrain_args
    sys.argv = ["glm130b.pretrain", *rest]
    # Run as `python -m glm130b.pretrain` runs: the command, not an import of an entry point.
    runpy.run_module("glm130b.pretrain", run_name="__main__", alter_sys=True)


# -- the drill ---------------------------------------------------------------------------------

Outcome = namedtuple("Outcome", "code stdout stderr")


@dataclass
class DrillConfig:
    runs: int = 6
    faults: int = 4                # injected per run: each kind once
    processes: int = 0             # per run; 0: runs alternate between 1 and 2
    iters: int = 8
    save_interval: int = 2
    tolerance: float = 1e-6        # the largest loss difference from an uninterrupted run
    seed: int = 0
    output: str = "fault-drill"
    summary: Optional[str] = None  # default: OUTPUT/summary.json


class Drill:
    def __init__(self, config: DrillConfig, data_args: list[str]):
        self.config, self.data_args = config, data_args
        self.out = Path(config.output).resolve()
        self.env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
                        PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                 os.environ.get("PYTHONPATH")])))
        self.references: dict[int, dict] = {}

    def command(self, procs: int, save: Path, inject_args=(), extra=()) -> list[str]:
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node", str(procs)] if procs > 1 else [sys.executable])
        module = (["-m", "glm130b.tools.fault_drill", "inject", *inject_args, "--"]
                  if inject_args else ["-m", "glm130b.pretrain"])
        return [*launcher, *module, *MODEL, *self.data_args, *RECIPE, "--train-iters",
                str(self.config.iters), "--save-interval", str(self.config.save_interval),
                "--save", str(save), *extra]

    def launch(self, procs: int, save: Path, inject_args=(), stderr=subprocess.PIPE):
        return subprocess.Popen(self.command(procs, save, inject_args, _resume_args(save)),
                                env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True)

    def finish(self, proc: subprocess.Popen) -> Outcome:
        stdout, stderr = proc.communicate(timeout=600)
        return Outcome(proc.returncode, stdout, stderr)

    def reference(self, procs: int) -> dict:
        """The losses and checkpoint size of an uninterrupted run."""
        if procs not in self.references:
            save = self.out / f"reference-{procs}"
            shutil.rmtree(save, ignore_errors=True)
            done = self.finish(self.launch(procs, save))
            if done.code:
                raise GLMError(f"the uninterrupted run failed: {done.stderr.strip()[-500:]}")
            step = save / f"global_step{self.config.save_interval}"
            self.references[procs] = {
                "losses": losses(save / "train_log.jsonl"),
                "save_bytes": sum(p.stat().st_size for p in step.iterdir()) + 20,
                "tail_bytes": (step / META).stat().st_size + 20}
        return self.references[procs]


def _resume_args(save: Path) -> list[str]:
    """What a person reruns: --load where a checkpoint was committed; else a fresh start,
    allowed to clear what a first, interrupted save left when none of it is complete."""
    if (save / "latest").is_file():
        return ["--load", str(save)]
    steps = step_folders(save).values()
    return ["--overwrite-checkpoints"] if steps and not any((p / META).is_file()
                                                            for p in steps) else []


def losses(log: Path) -> dict[int, list[float]]:
    """iteration -> every loss logged for it (more than one: an iteration logged twice)."""
    steps = {}
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            steps.setdefault(record["iteration"], []).append(record["loss"])
    return steps


def committed(save: Path):
    try:
        return int((save / "latest").read_text().strip().removeprefix("global_step"))
    except (OSError, ValueError):
        return None


def survivors(marker: str) -> list[int]:
    """Processes (not zombies) whose command line holds `marker`: this run's trainers."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state != b"Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def no_orphans(save: Path, problems: list) -> None:
    deadline = time.time() + ORPHAN_WAIT_S
    while survivors(str(save)) and time.time() < deadline:
        time.sleep(0.2)
    left = survivors(str(save))
    if left:
        problems.append(f"trainer processes {left} outlived their launcher by "
                        f"{ORPHAN_WAIT_S:.0f} s")
        for pid in left:  # this drill's own trainers, by id
            os.kill(pid, signal.SIGKILL)


def error_lines(stderr: str) -> set[str]:
    """The distinct `error:` lines (each rank says the same one)."""
    return {line for line in stderr.splitlines() if line.startswith("error: ")}


def our_traceback(stderr: str) -> bool:
    """A traceback through the package (torchrun adds its own for a failed child)."""
    return any("File" in line and "glm130b/" in line for line in stderr.splitlines())


def next_save(drill: Drill, save: Path) -> int:
    start, every = committed(save) or 0, drill.config.save_interval
    return min((start // every + 1) * every, drill.config.iters)


def kill_train(drill: Drill, save: Path, procs: int, rng: random.Random, problems: list):
    """kill -9 after a random number of steps of this start (the launcher where there is one)."""
    start = committed(save) or 0
    steps = rng.randint(1, max(1, drill.config.iters - start - 1))
    proc = drill.launch(procs, save, stderr=subprocess.STDOUT)
    progress = []  # rank 0's progress lines: the log still holds the last attempt's records

    def read():
        for line in proc.stdout:
            if line.startswith("iteration "):
                progress.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None and len(progress) < steps:
        time.sleep(0.05)
    running = proc.poll() is None
    proc.kill()
    reader.join()
    proc.wait()
    no_orphans(save, problems)
    return {"after_steps": len(progress), "launcher": procs > 1, "triggered": running}


def save_fault(drill: Drill, save: Path, procs: int, rng: random.Random, problems: list,
               fault: str):
    reference = drill.reference(procs)
    at, rank = next_save(drill, save), rng.randrange(procs)
    share = reference["save_bytes"] // procs
    byte = (share - rng.randrange(reference["tail_bytes"]) if rng.random() < 1 / 3
            else rng.randrange(share))
    before = committed(save)
    done = drill.finish(drill.launch(procs, save, ["--iteration", str(at), "--at-byte",
                                                   str(byte), "--fault", fault,
                                                   "--rank", str(rank)]))
    no_orphans(save, problems)
    triggered = done.code != 0
    killed = done.code == -signal.SIGKILL or "exitcode  : -9" in done.stderr  # torchrun's words
    if fault == "kill" and triggered and not killed:
        problems.append(f"a run meant to be killed failed: {done.stderr.strip()[-800:]}")
    if fault == "enospc" and triggered:
        lines = error_lines(done.stderr)
        expected = f"error: saving {save / f'global_step{at}'} failed"
        if len(lines) != 1 or not next(iter(lines)).startswith(expected) \
                or our_traceback(done.stderr):
            problems.append(f"a full disk was not one line: {done.stderr.strip()[-800:]}")
        if (save / f"global_step{at}").exists() or committed(save) != before:
            problems.append(f"a full disk at global_step{at} left its folder or moved latest")
    return {"iteration": at, "byte": byte, "rank": rank, "triggered": triggered}


def damage(drill: Drill, save: Path, procs: int, rng: random.Random, problems: list):
    step = tag_folder(save)
    victim = rng.choice(sorted(p for p in step.iterdir() if p.suffix in (".pt", ".json")))
    original = victim.read_bytes()
    how = rng.choice(("empty", "truncate"))
    keep = 0 if how == "empty" else rng.randrange(1, len(original) - 1)
    victim.write_bytes(original[:keep])
    try:
        done = drill.finish(drill.launch(procs, save))
        lines = error_lines(done.stderr)
        if done.code == 0 or len(lines) != 1 or str(victim) not in next(iter(lines), "") \
                or our_traceback(done.stderr):
            problems.append(f"damaged {victim} ({how}) was not one line naming it: exit "
                            f"{done.code}, {done.stderr.strip()[-800:]}")
        no_orphans(save, problems)
    finally:
        victim.write_bytes(original)  # the operator restores it from a backup
    return {"file": victim.name, "how": how, "kept_bytes": keep, "triggered": True}


def check_latest(save: Path, before, problems: list) -> None:
    now = committed(save)
    if before is not None and (now is None or now < before):
        problems.append(f"latest went back from global_step{before} to {now}")
    if now is None:
        return
    try:
        is_training_checkpoint(save)
        read_meta(save)
        bad = damaged_files(sorted(tag_folder(save).glob("*.pt")))
    except GLMError as e:
        bad = str(e)
    if bad:
        problems.append(f"latest does not load: {bad}")


def settle(drill: Drill, save: Path, procs: int, problems: list, notes: list) -> None:
    """A kill between a save's metadata and `latest` leaves a complete checkpoint that
    `latest` does not name: the trainer refuses to start past it and says how to go on; do as
    it says."""
    before = committed(save)
    if not [n for n, p in step_folders(save).items()
            if n > (-1 if before is None else before) and (p / META).is_file()]:
        return
    done = drill.finish(drill.launch(procs, save))
    newer = [line for line in error_lines(done.stderr) if "is complete but" in line]
    if done.code == 0 or not newer:
        problems.append(f"a complete checkpoint newer than latest was not refused: "
                        f"{done.stderr.strip()[-800:]}")
        return
    tag = newer[0].split("write ")[1].split(" into")[0]
    (save / "latest").write_text(tag + "\n")
    notes.append(f"followed the refusal: latest moved from {before} to {tag}")


def finish_run(drill: Drill, save: Path, procs: int, problems: list, notes: list) -> None:
    settle(drill, save, procs, problems, notes)
    done = drill.finish(drill.launch(procs, save))
    if done.code:
        problems.append(f"the resumed run failed: {done.stderr.strip()[-800:]}")
        return
    got, want = losses(save / "train_log.jsonl"), drill.reference(procs)["losses"]
    twice = sorted(i for i, values in got.items() if len(values) > 1)
    if twice:
        problems.append(f"iterations logged twice: {twice}")
    if sorted(got) != sorted(want):
        problems.append(f"iterations {sorted(got)}, the uninterrupted run {sorted(want)}")
    diff = max((abs(got[i][-1] - want[i][0]) for i in want if i in got), default=0.0)
    if diff > drill.config.tolerance:
        problems.append(f"losses differ from the uninterrupted run's by {diff:.3g}")
    leftovers = [p.name for p in save.rglob(".*.tmp*")]
    newer = [n for n in step_folders(save) if n > (committed(save) or 0)]
    if leftovers or newer:
        problems.append(f"left behind: {leftovers + [f'global_step{n}' for n in newer]}")


FAULTS = {"kill-train": kill_train,
          "kill-save": lambda *a: save_fault(*a, fault="kill"),
          "enospc-save": lambda *a: save_fault(*a, fault="enospc"),
          "damage": damage}


def one_run(drill: Drill, index: int, procs: int) -> dict:
    rng = random.Random(drill.config.seed * 1000 + index)
    save = drill.out / f"run{index}"
    shutil.rmtree(save, ignore_errors=True)
    problems, faults, notes = [], [], []
    kinds = [k for _ in range(-(-drill.config.faults // len(KINDS))) for k in KINDS]
    for kind in rng.sample(kinds, drill.config.faults):  # each kind in turn, in random order
        settle(drill, save, procs, problems, notes)
        before = committed(save)
        if kind == "damage" and before is None:  # nothing to damage yet
            kind = "kill-train"
        detail = FAULTS[kind](drill, save, procs, rng, problems)
        check_latest(save, before, problems)
        faults.append({"kind": kind, **detail, "latest_after": committed(save)})
    finish_run(drill, save, procs, problems, notes)
    return {"run": index, "processes": procs, "faults": faults, "notes": notes,
            "problems": problems, "lost_data": bool(problems)}


def make_data(folder: Path) -> list[str]:
    from ..data.corpus import generate_corpus
    from ..data.preprocess import preprocess
    from ..tokenization.train import train_tokenizer
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n"
                              for t in generate_corpus(400, 0)), encoding="utf-8")
    tok = train_tokenizer([corpus], folder / "tok", vocab_size=1000, model_type="bpe")
    preprocess([str(corpus)], str(folder / "text"), "sentencepiece", str(tok), workers=1)
    return ["--tokenizer-type", "sentencepiece", "--tokenizer-model", str(tok),
            "--data-path", str(folder / "text")]


def parse_args(argv) -> DrillConfig:
    d = DrillConfig()
    p = argparse.ArgumentParser(prog="python -m glm130b.tools.fault_drill",
                                description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--faults", type=int, default=d.faults,
                   help="faults injected per run (the kinds in turn, in random order)")
    p.add_argument("--processes", type=int, default=d.processes,
                   help="trainer processes per run (0: runs alternate between 1 and 2)")
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--save-interval", type=int, default=d.save_interval)
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="the largest loss difference from an uninterrupted run")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--output", default=d.output)
    p.add_argument("--summary", help="default: OUTPUT/summary.json")
    return config_from_args(DrillConfig, p.parse_args(argv))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["inject"]:
        inject(argv[1:])
        return 0
    config = parse_args(argv)
    t = time.time()
    drill = Drill(config, make_data(Path(config.output).resolve() / "data"))
    runs = []
    for i in range(config.runs):
        procs = config.processes or 1 + i % 2
        runs.append(one_run(drill, i, procs))
        r = runs[-1]
        print(f"run {i} ({procs} process{'es' if procs > 1 else ''}): "
              f"{', '.join(f['kind'] for f in r['faults'])}: "
              f"{'LOST DATA: ' + '; '.join(r['problems']) if r['lost_data'] else 'nothing lost'}",
              flush=True)
    met = [f for r in runs for f in r["faults"] if f["triggered"]]
    kinds = {k: sum(f["kind"] == k for f in met) for k in KINDS}
    summary = {"runs": len(runs), "lost_data": sum(r["lost_data"] for r in runs),
               "faults": len(met), "faults_by_kind": kinds,
               "faults_not_met": sum(len(r["faults"]) for r in runs) - len(met),
               "seconds": round(time.time() - t, 1), "seed": config.seed, "details": runs}
    path = Path(config.summary or Path(config.output) / "summary.json")
    files.atomic_write_text(path, json.dumps(summary, indent=1) + "\n")
    print(f"fault drill: {summary['runs']} runs, {summary['faults']} faults met "
          f"({', '.join(f'{n} {k}' for k, n in kinds.items())}), {summary['lost_data']} runs "
          f"lost data, {summary['seconds']:.0f} s; summary in {path}", flush=True)
    return 1 if summary["lost_data"] else 0


if __name__ == "__main__":
    run(main)
