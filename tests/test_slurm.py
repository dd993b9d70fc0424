"""The generated scripts/slurm.sbatch on a real SLURM: a single-node cluster that ci/slurm-up
starts on this machine (Debian's slurmctld, slurmd and munge). Skipped, with the reason, where
SLURM cannot start (not root, no package registry).

Every job trains the digits example for a few epochs on the CPU (--gpus-per-node=0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from gen_helpers import new_project, template_repo

__all__ = ["template_repo"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "slurm_research"
# Small and deterministic: 3 epochs of 12 batches, a checkpoint every 4 steps.
TRAIN = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=12",
    "trainer.deterministic=true",
    "checkpoint.every_n_train_steps=4",
    "early_stopping.monitor=null",
    "wandb.mode=disabled",
]
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=10:00"]


def _slurm_up() -> str | None:
    """None when the cluster is up, else why not."""
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        return "no SLURM and no apt-get to install it"
    if os.geteuid() != 0:
        return "ci/slurm-up needs root"
    proc = subprocess.run([str(ROOT / "ci" / "slurm-up")], capture_output=True, text=True, timeout=600)
    return None if proc.returncode == 0 else f"ci/slurm-up failed: {(proc.stderr or proc.stdout).strip()[-500:]}"


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = _slurm_up()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def project(cluster: None, template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A generated digits project, installed into a private folder the jobs put on PYTHONPATH."""
    base = tmp_path_factory.mktemp("slurm")
    dest = new_project(template_repo, base / "proj", f"package_name={PACKAGE}", "slurm=true")
    site = base / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(dest),
        ],
        check=True,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=str(site),
        WANDB_MODE="disabled",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return dest, env


def submit(project: tuple[Path, dict], out: Path, *sbatch: str, overrides: tuple[str, ...] = ()) -> str:
    dest, env = project
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", f"--output={out}/slurm-%j.out", *CPU_JOB, *sbatch]
    cmd += [str(dest / "scripts" / "slurm.sbatch"), *TRAIN, f"output_dir={out}/runs", *overrides]
    proc = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_for(job: str, states: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job)
        if info.get("JobState") in states:
            return info
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {job_info(job).get('JobState')} after {timeout} s")


def wait_until(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_dir(out: Path) -> Path:
    (folder,) = (out / "runs").iterdir()
    return folder


def log(out: Path, job: str) -> str:
    return (out / f"slurm-{job}.out").read_text()


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(out) / "checkpoints" / "last.ckpt", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ at {key}"


@pytest.fixture(scope="module")
def baseline(project: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted job, with a second job beside it on the same node (they must not clash)."""
    out, other = tmp_path_factory.mktemp("baseline"), tmp_path_factory.mktemp("beside")
    jobs = [submit(project, out), submit(project, other, overrides=("trainer.max_epochs=2",))]
    for job, folder in zip(jobs, (out, other), strict=True):
        info = wait_for(job)
        assert info["JobState"] == "COMPLETED", log(folder, job)
    return out


def test_job_completes_with_summary(baseline: Path) -> None:
    folder = run_dir(baseline)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "success" and summary["stop_reason"] == "max_epochs"
    assert summary["global_step"] == 36 and summary["world_size"] == 1
    assert re.fullmatch(r"slurm-scaffoldtest-\d+-\d{8}-\d{6}", folder.name), folder.name
    assert summary["metrics"]["val_acc"] > 0.5


def test_two_jobs_side_by_side_and_cpu_only_threads(baseline: Path, tmp_path: Path) -> None:
    # The baseline fixture ran two jobs at once (distinct rendezvous ports); here their logs.
    (job,) = [p.name[6:-4] for p in baseline.glob("slurm-*.out")]
    text = log(baseline, job)
    assert "1 task(s) x 1 process(es) per node (torchrun), 1 thread(s) each" in text, text


def _preempt_and_resume(project, out: Path, send) -> dict[str, str]:
    job = submit(project, out)
    wait_until(lambda: (out / "runs").is_dir() and any((out / "runs").glob("*/checkpoints/last.ckpt")), "a checkpoint")
    send(job)
    info = wait_for(job)
    assert info["JobState"] == "COMPLETED", log(out, job)
    assert int(info["Restarts"]) >= 1, log(out, job)
    return info


def test_usr1_mid_epoch_requeues_and_resumes_bit_identically(project, baseline: Path, tmp_path: Path) -> None:
    def usr1(job: str) -> None:
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)

    info = _preempt_and_resume(project, tmp_path, usr1)
    text = log(tmp_path, info["JobId"])
    assert "requeueing job" in text
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["resumed_from"] and summary["global_step"] == 36
    assert_same_weights(final_weights(tmp_path), final_weights(baseline))


def test_scontrol_requeue_saves_and_resumes_bit_identically(project, baseline: Path, tmp_path: Path) -> None:
    def requeue(job: str) -> None:
        subprocess.run(["scontrol", "requeue", job], check=True)

    _preempt_and_resume(project, tmp_path, requeue)
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["resumed_from"] and summary["global_step"] == 36
    assert_same_weights(final_weights(tmp_path), final_weights(baseline))


def test_one_task_per_process_mode(project, tmp_path: Path) -> None:
    """--ntasks-per-node=2: srun starts both processes; the engine reads SLURM's variables."""
    job = submit(project, tmp_path, "--ntasks-per-node=2", overrides=("trainer.max_epochs=1",))
    info = wait_for(job)
    assert info["JobState"] == "COMPLETED", log(tmp_path, job)
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 6  # 12 batches of 128, shared by 2
    assert "2 task(s) x 1 process(es) per node (tasks)" in log(tmp_path, job)


def test_late_usr1_after_the_run_finished_is_not_requeued(project, tmp_path: Path) -> None:
    job = submit(project, tmp_path, overrides=("trainer.max_epochs=1",))
    wait_until(lambda: any((tmp_path / "runs").glob("*/summary.json")), "summary.json", timeout=180)
    sent = subprocess.run(["scancel", "--signal=USR1", "--batch", job], capture_output=True).returncode == 0
    info = wait_for(job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0", log(tmp_path, job)
    assert "requeueing job" not in log(tmp_path, job)
    if sent:
        assert json.loads((run_dir(tmp_path) / "summary.json").read_text())["stop_reason"] == "max_epochs"


def test_reused_job_id_does_not_resume_an_old_run(project, tmp_path: Path) -> None:
    """A controller that lost its state hands out old job ids again: the new job starts fresh."""
    reset = [str(ROOT / "ci" / "slurm-up"), "--reset"]
    subprocess.run(reset, check=True, capture_output=True)
    first = submit(project, tmp_path, overrides=("trainer.max_epochs=1",))
    assert wait_for(first)["JobState"] == "COMPLETED"
    subprocess.run(reset, check=True, capture_output=True)
    second = submit(project, tmp_path, overrides=("trainer.max_epochs=1",))
    assert second == first  # the id repeats
    assert wait_for(second)["JobState"] == "COMPLETED", log(tmp_path, second)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for folder in runs:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["resumed_from"] is None and summary["global_step"] == 12
