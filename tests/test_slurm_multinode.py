"""The generated scripts/slurm.sbatch on a real two-node SLURM: `ci/slurm-up --nodes 2` runs two
slurmd daemons, n9 and n10, in Linux namespaces of their own on this machine (own hostname, own
/tmp, own loopback address). SLURM's batch host is n9; torchrun's c10d rendezvous, which sorts the
host names as strings, gives global rank 0 to n10. Skipped, with the reason, where SLURM cannot
start (not root, no package registry, no namespaces).

Every job trains the digits example on the CPU (--gpus-per-node=0), a few dozen steps. The
project and the runs live under /var/tmp: /tmp is each node's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gen_helpers import new_project, template_repo

__all__ = ["template_repo"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CONF = "/var/lib/scaffold-slurm-2n/slurm.conf"
PACKAGE = "multi_research"
# 2 epochs of 20 batches of 32 samples per process (the digits hold 45 such batches), a checkpoint every 2 steps.
TRAIN = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=20",
    "data.batch_size=32",
    "trainer.deterministic=true",
    "checkpoint.every_n_train_steps=2",
    "early_stopping.monitor=null",
    "wandb.mode=disabled",
]
CPU_JOB = ["--gpus-per-node=0", "--cpus-per-task=1", "--time=10:00"]
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1"]
NOISE = ("SignalException", "Traceback", "srun: error", "exit code", "Root Cause")


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    if shutil.which("apt-get") is None and shutil.which("sbatch") is None:
        pytest.skip("no SLURM and no apt-get to install it")
    if os.geteuid() != 0:
        pytest.skip("ci/slurm-up needs root")
    proc = subprocess.run([str(ROOT / "ci" / "slurm-up"), "--nodes", "2"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"ci/slurm-up --nodes 2 failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", CONF)  # this test cluster's clients (sbatch, scontrol, scancel)
        yield


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder every node sees (each has its own /tmp)."""
    folder = Path(tempfile.mkdtemp(prefix="scaffold-2n-", dir="/var/tmp"))
    yield folder
    if not os.environ.get("SCAFFOLD_KEEP_TEST_FILES"):  # keep them to look at a failure
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def project(cluster: None, template_repo: Path, shared: Path) -> tuple[Path, dict]:
    dest = new_project(template_repo, shared / "proj", f"package_name={PACKAGE}", "slurm=true")
    site = shared / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    subprocess.run([*pip, str(site), str(dest)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=str(site),
        WANDB_MODE="disabled",
        PYTHONDONTWRITEBYTECODE="1",
        SLURM_CONF=CONF,
    )
    return dest, env


def submit(project, out: Path, *sbatch: str, overrides: tuple[str, ...] = (), env: dict | None = None) -> str:
    dest, base_env = project
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", f"--output={out}/slurm-%j.out", *CPU_JOB, *sbatch]
    cmd += [str(dest / "scripts" / "slurm.sbatch"), *TRAIN, f"output_dir={out}/runs", *overrides]
    full = {k: v for k, v in {**base_env, **(env or {})}.items() if v is not None}  # None: unset it
    proc = subprocess.run(cmd, cwd=dest, env=full, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text.splitlines()[0] if text else ""))


def wait_for(job: str, timeout: float = 300) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job)
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return info
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {job_info(job).get('JobState')} after {timeout} s")


def wait_until(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def logs(out: Path) -> str:
    return "".join(p.read_text() for p in sorted(out.glob("slurm-*.out")))


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"weights differ at {key}"


def a_checkpoint(out: Path):
    return lambda: any((out / "runs").glob("*/checkpoints/last.ckpt")) if (out / "runs").is_dir() else False


def test_two_node_torchrun_usr1_with_rank_0_off_the_batch_host_requeues_bit_identically(project, shared: Path) -> None:
    base, cut = shared / "a-base", shared / "a-cut"
    jobs = [submit(project, base, *TWO_NODES), submit(project, cut, *TWO_NODES)]
    wait_until(a_checkpoint(cut), "a checkpoint")
    subprocess.run(["scancel", "--signal=USR1", "--batch", jobs[1]], check=True)
    for job, out in zip(jobs, (base, cut), strict=True):
        info = wait_for(job)
        assert info["JobState"] == "COMPLETED", logs(out)
    assert int(job_info(jobs[1])["Restarts"]) >= 1, logs(cut)
    text = logs(cut)
    assert "requeueing job" in text and "on 2 node(s), 1 task(s) x 1 process(es) per node (torchrun)" in text
    assert not [line for line in text.splitlines() if any(n in line for n in NOISE)], text
    (run,) = (cut / "runs").iterdir()
    s = summary(run)
    assert s["host"] == "n10"  # global rank 0 ran where the batch script did not (n9)
    assert s["resumed_from"] and s["world_size"] == 2 and s["global_step"] == 40
    (reference,) = (base / "runs").iterdir()
    assert_same_weights(weights(run), weights(reference))


def test_two_node_one_task_per_process_trains_with_world_size_2(project, shared: Path) -> None:
    out = shared / "b"
    job = submit(project, out, *TWO_NODES, env={"SCAFFOLD_LAUNCH": "tasks"}, overrides=("trainer.max_epochs=1",))
    info = wait_for(job)
    assert info["JobState"] == "COMPLETED", logs(out)
    (run,) = (out / "runs").iterdir()
    s = summary(run)
    assert s["world_size"] == 2 and s["global_step"] == 20 and s["stop_reason"] == "max_epochs"
    assert "on 2 node(s), 1 task(s) x 1 process(es) per node (tasks)" in logs(out)
    assert s["host"] == "n9"  # SLURM_PROCID 0: the first node


def test_array_tasks_train_their_own_runs_and_a_usr1_requeues_only_its_task(project, shared: Path) -> None:
    out = shared / "c"
    array = submit(project, out, "--nodes=1", "--array=0-1", overrides=("trainer.max_epochs=3",))
    second = f"{array}_1"
    wait_until(lambda: any((out / "runs").glob(f"*-{array}_1-*/checkpoints/last.ckpt")), "task 1's checkpoint")
    subprocess.run(["scancel", "--signal=USR1", "--batch", second], check=True)
    infos = {task: wait_for(f"{array}_{task}") for task in (0, 1)}
    assert all(i["JobState"] == "COMPLETED" for i in infos.values()), logs(out)
    assert infos[0]["Restarts"] == "0" and int(infos[1]["Restarts"]) >= 1, logs(out)
    runs = sorted((out / "runs").iterdir())
    assert [re.search(r"-(\d+_\d)-", r.name).group(1) for r in runs] == [f"{array}_0", f"{array}_1"]
    for run in runs:
        assert summary(run)["global_step"] == 3 * 20
    assert summary(runs[0])["resumed_from"] is None and summary(runs[1])["resumed_from"]
    assert f"requeueing job {array}_1" in logs(out) and f"requeueing job {array}_0" not in logs(out)


def test_job_requeued_from_two_nodes_onto_one_resumes_an_epoch_end_checkpoint(project, shared: Path) -> None:
    """n10 goes down mid-run (a node failure): SLURM requeues the job; given one node, it restarts on
    n9 alone from the last epoch-end checkpoint, saved by 2 processes, and trains the rest on 1."""
    out = shared / "d"
    epoch_end = ("checkpoint.every_n_train_steps=null", "checkpoint.every_n_epochs=1", "trainer.max_epochs=6")
    job = submit(project, out, *TWO_NODES, overrides=epoch_end)
    try:
        wait_until(a_checkpoint(out), "the first epoch-end checkpoint")
        subprocess.run(["scontrol", "update", "NodeName=n10", "State=DOWN", "Reason=scaffold-test"], check=True)
        # Kept out of service (ReturnToService=2 would bring a DOWN node back as soon as it answers).
        subprocess.run(["scontrol", "update", "NodeName=n10", "State=DRAIN", "Reason=scaffold-test"], check=True)
        wait_until(lambda: int(job_info(job).get("Restarts", 0)) >= 1, "the requeue", timeout=120)
        subprocess.run(["scontrol", "update", f"JobId={job}", "NumNodes=1-1", "NumTasks=1"], check=True)
        info = wait_for(job)
    finally:
        subprocess.run(["scontrol", "update", "NodeName=n10", "State=RESUME"], capture_output=True)
    assert info["JobState"] == "COMPLETED", logs(out)
    assert info["NumNodes"] == "1", info
    text = logs(out)
    assert "(restart 0): run" in text and "on 2 node(s)" in text and "(restart 1): run" in text, text
    assert "on 1 node(s)" in text.split("(restart 1): run", 1)[1], text
    (run,) = (out / "runs").iterdir()
    s = summary(run)
    assert s["world_size"] == 1 and s["stop_reason"] == "max_epochs", s
    # SLURM stops the job with SIGTERM: last.ckpt is saved then, usually mid-epoch by 2 processes,
    # which 1 cannot continue; the resumed job takes the newest epoch-end checkpoint and says so.
    resumed = re.search(r"resumed from (\S+) at epoch \d+, step (\d+)", text)
    assert resumed and int(resumed.group(2)) % 20 == 0 and resumed.group(1) == s["resumed_from"], text
    if Path(s["resumed_from"]).name != "last.ckpt":
        assert "last.ckpt was saved mid-epoch with a global batch of 64, this run's is 32" in text
    assert s["epoch"] == 6 and s["global_step"] % 20 == 0  # whole epochs: 2 processes' 20 steps, then 1's


def test_slurm_job_with_wandb_credentials_records_offline_at_once(project, shared: Path) -> None:
    out = shared / "e"
    netrc = out / "netrc"
    out.mkdir(parents=True)
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "f" * 40 + "\n")
    netrc.chmod(0o600)
    env = {
        "WANDB_MODE": None,
        "WANDB_API_KEY": "f" * 40,
        "NETRC": str(netrc),
        "WANDB_BASE_URL": "http://10.255.255.1:9",  # unroutable: an online start would wait init_timeout
        "WANDB_DIR": str(out / "wb"),
        "WANDB_SILENT": "true",
    }
    overrides = ("trainer.max_epochs=1", "wandb.mode=auto", "wandb.init_timeout=300")
    job = submit(project, out, "--nodes=1", env=env, overrides=overrides)
    info = wait_for(job, timeout=240)
    assert info["JobState"] == "COMPLETED", logs(out)
    assert "was saved offline" in logs(out)
    assert len(list((out / "wb" / "wandb").glob("offline-run-*"))) == 1
    start = time.strptime(info["StartTime"], "%Y-%m-%dT%H:%M:%S")
    end = time.strptime(info["EndTime"], "%Y-%m-%dT%H:%M:%S")
    assert time.mktime(end) - time.mktime(start) < 200  # no online attempt waited its 300 s
