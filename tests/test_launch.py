"""Launching without ssh: two torchrun "nodes" on loopback, and tasks that SLURM's srun would
start (its variables set by hand), train the single-node run's numbers; SLURM's variables map
onto torch's with the rank layout every launcher gives."""
from __future__ import annotations

import random
import socket
import subprocess
import sys

import pytest

from glm130b.errors import UsageError
from glm130b.parallel.launch import environment_from_slurm, expand_nodelist
from helpers import (TRAIN_ENV, logged_iterations, losses, pretrain,
                     train_args)

TORCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def test_nodelist_expansion():
    assert expand_nodelist("node[01-03,07]") == ["node01", "node02", "node03", "node07"]
    assert expand_nodelist("a,b[8-10],c") == ["a", "b8", "b9", "b10", "c"]
    assert expand_nodelist("r[1-2]-n[08-09]") == ["r1-n08", "r1-n09", "r2-n08", "r2-n09"]
    assert expand_nodelist("localhost") == ["localhost"]


def test_slurm_variables_map_onto_torch_variables():
    task = dict(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_LOCALID="1", SLURM_NODEID="1",
                SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu[07-08]", SLURM_JOB_ID="1234567")
    assert environment_from_slurm(task) == dict(RANK="5", WORLD_SIZE="8", LOCAL_RANK="1",
                                                MASTER_ADDR="gpu07", MASTER_PORT="24567")
    chosen = environment_from_slurm(dict(task, MASTER_ADDR="10.0.0.1", MASTER_PORT="6000"))
    assert (chosen["MASTER_ADDR"], chosen["MASTER_PORT"]) == ("10.0.0.1", "6000")
    assert environment_from_slurm(dict(task, RANK="5", WORLD_SIZE="8")) == {}  # torchrun's
    assert environment_from_slurm({"SLURM_JOB_ID": "1"}) == {}  # a batch script, no tasks
    with pytest.raises(UsageError, match="distribution=block"):  # srun --distribution=cyclic
        environment_from_slurm(dict(task, SLURM_PROCID="3"))


def free_port(low: int = 20000, high: int = 29999) -> int:
    for port in random.sample(range(low, high + 1), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def run_together(commands: list[tuple[list[str], dict]]) -> None:
    """Start the processes of one job at once (as each node would), wait for them all."""
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for argv, env in commands]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]


@pytest.fixture(scope="module")
def single_node(data, tmp_path_factory):
    """The losses of one torchrun with 2 processes (data parallel, ZeRO-1)."""
    log = tmp_path_factory.mktemp("single-node") / "train_log.jsonl"
    pretrain(train_args(data, train_log=log), procs=2)
    return losses(log)


def assert_same_losses(log, want):
    # each step logged once: one rank 0, not two processes that each trained alone
    assert logged_iterations(log) == sorted(want) == [1, 2, 3, 4]
    got = losses(log)
    for it in want:  # launchers differ by up to 2e-5 elsewhere; here all else is equal
        assert got[it] == pytest.approx(want[it], abs=1e-5), it


@pytest.mark.slow
def test_two_torchrun_nodes_train_the_single_node_numbers(data, single_node, tmp_path):
    log, port = tmp_path / "train_log.jsonl", free_port()
    run_together([([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                    "--node-rank", str(node), "--nproc-per-node", "1",
                    "--master-addr", "127.0.0.1", "--master-port", str(port),
                    "-m", "glm130b.pretrain", *train_args(data, train_log=log)], TRAIN_ENV)
                  for node in (0, 1)])
    assert_same_losses(log, single_node)


@pytest.mark.slow
def test_srun_tasks_train_the_single_node_numbers(data, single_node, tmp_path):
    """Two plain processes with only what srun gives its tasks (no RANK, WORLD_SIZE, ...);
    the master port comes from the job id."""
    log, port = tmp_path / "train_log.jsonl", free_port()
    base = {k: v for k, v in TRAIN_ENV.items() if k not in TORCH_VARIABLES}
    base.update(SLURM_NTASKS="2", SLURM_NNODES="1", SLURM_NODEID="0",
                SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID=str(70000 + port - 20000))
    run_together([([sys.executable, "-m", "glm130b.pretrain", *train_args(data, train_log=log)],
                   dict(base, SLURM_PROCID=str(task), SLURM_LOCALID=str(task)))
                  for task in (0, 1)])
    assert_same_losses(log, single_node)
