"""What the engine reads from SLURM, without a cluster: node lists, one GPU per task, job-array
run names, the exit-code file the job script reads, and a stop signal during a long validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
RUN = [
    "run_name=r",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "trainer.deterministic=true",
    "wandb.mode=disabled",
    "data.n_val=800",  # 100 validation batches
]


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("rack[1-2]-node[01-04]", [f"rack{r}-node0{n}" for r in (1, 2) for n in (1, 2, 3, 4)]),
        ("gpu[07-09,12],cpu1", ["gpu07", "gpu08", "gpu09", "gpu12", "cpu1"]),
        ("r6i4n[4,10]", ["r6i4n4", "r6i4n10"]),
        ("jzxh[098-101]", ["jzxh098", "jzxh099", "jzxh100", "jzxh101"]),
        ("node1", ["node1"]),
    ],
)
def test_node_lists_expand_as_scontrol_does(nodelist: str, hosts: list[str]) -> None:
    from engine.distributed import expand_nodelist, first_host

    assert expand_nodelist(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]


def test_one_gpu_per_task_is_cuda_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """srun --gpus-per-task=1: each task sees one GPU, its own, whatever its local rank."""
    from engine.config import ConfigError
    from engine.distributed import gpu_index

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_GPUS_PER_TASK", "1")
    assert [gpu_index(r, 1) for r in range(4)] == [0, 0, 0, 0]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "1")  # torchrun's processes share their task's GPUs
    with pytest.raises(ConfigError, match="no GPU of its own"):
        gpu_index(1, 1)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.delenv("SLURM_GPUS_PER_TASK")  # all of a node's GPUs visible to each task: still an error
    with pytest.raises(ConfigError, match="no GPU of its own"):
        gpu_index(1, 1)


def test_array_tasks_get_runs_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.run import default_run_name

    monkeypatch.setenv("SLURM_JOB_ID", "1235")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert default_run_name() == "slurm-1234_1"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    assert default_run_name() == "slurm-1235"


def _start(out: Path, *args: str, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jobs.resume_job", f"output_dir={out}", *RUN, *args]
    full = {**os.environ, "PYTHONPATH": str(TESTS), **env}
    return subprocess.Popen(cmd, cwd=TESTS, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} has fewer than {count} lines after {timeout} s")


def test_preempted_run_writes_75_to_the_exit_file_and_exits_0(tmp_path: Path) -> None:
    """Under the job script the code travels by file: torchrun and srun see a clean exit 0."""
    exit_file, step_file = tmp_path / "exit", tmp_path / "step"
    proc = _start(tmp_path, SCAFFOLD_EXIT_FILE=str(exit_file), STEP_FILE=str(step_file), SLOW="0.05")
    deadline = time.monotonic() + 60
    while not step_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert exit_file.read_text() == "75\n"
    assert "received SIGUSR1" in out and "Traceback" not in out
    assert not list(tmp_path.glob("exit.*.tmp"))


@pytest.mark.parametrize("where", ["epoch end", "mid-epoch"])
def test_stop_signal_cuts_a_long_validation_and_the_resumed_run_repeats_it(tmp_path: Path, where: str) -> None:
    """USR1 during a 100-batch validation (0.1 s a batch): saved within a few batches, not 10 s later;
    the resumed run validates all 100 batches again and ends as an uninterrupted run does."""
    extra = ("trainer.val_check_interval=5",) if where == "mid-epoch" else ()
    base = tmp_path / "base"
    baseline = _start(base, *extra, WEIGHTS_OUT=str(base / "final.pt"))
    out, _ = baseline.communicate(timeout=120)
    assert baseline.returncode == 0, out

    run, val_log = tmp_path / "cut", tmp_path / "val.log"
    proc = _start(run, *extra, SLOW_VAL="0.1", VAL_LOG=str(val_log))
    _wait_for_lines(val_log, 3)
    sent = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 75, out
    assert "val stopped at batch" in out and "it runs again when the run resumes" in out, out
    assert took < 6, f"the save waited for the validation: {took:.1f} s"
    seen = len(val_log.read_text().splitlines())
    assert seen < 10, seen
    ckpt = torch.load(run / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loop"]["val_pending"] is True and ckpt["loop"]["epoch"] == 0
    if where == "epoch end":
        assert ckpt["loop"]["batches_done"] == 11 and ckpt["loop"]["epoch_done"] is False

    val_log.unlink()
    resumed = _start(run, *extra, "resume=last", VAL_LOG=str(val_log), WEIGHTS_OUT=str(run / "final.pt"))
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    first = [line for line in val_log.read_text().splitlines() if line.startswith("0 ")]
    assert first[:100] == [f"0 {i}" for i in range(100)]  # the cut validation, whole, first
    a, b = torch.load(base / "final.pt", weights_only=True), torch.load(run / "final.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_resume_auto_on_another_global_batch_falls_back_to_an_epoch_end_checkpoint(tmp_path: Path) -> None:
    """A requeued job on fewer nodes: last.ckpt (mid-epoch, 2x the batch) cannot continue, the
    epoch-end checkpoint can; resume=auto takes it and says so (resume=last still refuses: test_resume)."""
    step_file = tmp_path / "step"
    args = ("trainer.max_epochs=3", "checkpoint.every_n_epochs=1", "checkpoint.save_top_k=-1", "data.n_val=30")
    proc = _start(tmp_path, *args, STEP_FILE=str(step_file), SLOW="0.05")
    deadline = time.monotonic() + 60  # 11 steps an epoch: stop in the second one
    while time.monotonic() < deadline and not (step_file.exists() and int(step_file.read_text() or 0) >= 14):
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=True)["loop"]
    assert last["epoch"] == 1 and last["batches_done"] > 0 and not last["epoch_done"]
    resumed = _start(tmp_path, *args, "resume=auto", "data.batch_size=4")
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    assert "last.ckpt was saved mid-epoch with a global batch of 8, this run's is 4" in out, out
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert Path(s["resumed_from"]).name.startswith("epoch=0-step=11") and s["stop_reason"] == "max_epochs"


def test_under_ddp_a_signal_to_one_rank_cuts_every_rank_at_the_same_validation_batch(tmp_path: Path) -> None:
    """SLURM may signal the ranks at different instants: they agree, and all stop the validation."""
    val_log, run = tmp_path / "val.log", tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "jobs.resume_job"]
    cmd += [f"output_dir={run}", *RUN, "trainer.max_epochs=1"]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "SLOW_VAL": "0.1", "VAL_LOG": str(val_log), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_lines(val_log, 3, timeout=120)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(p) for p in children]
    assert len(workers) == 2, children
    os.kill(max(workers), signal.SIGUSR1)  # one rank only
    out, _ = proc.communicate(timeout=60)
    assert "val stopped at batch" in out, out
    assert len(val_log.read_text().splitlines()) < 20  # of 50 per rank
    ckpt = torch.load(run / "r" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loop"]["val_pending"] is True and ckpt["loop"]["world_size"] == 2
