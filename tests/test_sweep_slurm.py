"""scripts/sweep.sbatch on the real single-node SLURM cluster (ci/slurm-up): a job array whose
tasks are workers of one sweep; a USR1 to one task mid-trial requeues it and the trial resumes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from gen_helpers import new_project, template_repo
from test_slurm import _slurm_up

__all__ = ["template_repo"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PACKAGE = "sweep_slurm_research"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


@pytest.fixture(scope="module")
def project(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    reason = _slurm_up()
    if reason:
        pytest.skip(reason)
    dest = new_project(
        template_repo, tmp_path_factory.mktemp("sweep_slurm") / "proj", f"package_name={PACKAGE}", "slurm=true"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env['PATH']}",
        PYTHONPATH=str(dest / "src"),  # the jobs run the project from its folder, sweeps/ lands there
        WANDB_MODE="disabled",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return dest, env


def tasks(job: str) -> dict[str, dict[str, str]]:
    text = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    infos = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in text.splitlines() if line.strip()]
    return {f"{i.get('ArrayJobId')}_{i.get('ArrayTaskId')}": i for i in infos}


def test_an_array_of_two_workers_shares_one_sweep_and_a_requeued_task_resumes_its_trial(project, tmp_path) -> None:
    dest, env = project
    (dest / "configs" / "arr.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "arr",
                "method": "random",
                "run_cap": 2,
                "metric": {"name": "val_acc", "goal": "maximize"},
                "parameters": {"model.hidden": {"values": [16, 32]}, "trainer.max_epochs": {"value": 3}},
            }
        )
    )
    cmd = ["sbatch", "--parsable", "--array=0-1", f"--output={tmp_path}/slurm-%A_%a.out"]
    cmd += ["--gpus-per-node=0", "--cpus-per-task=1", "--time=10:00", "scripts/sweep.sbatch", "configs/arr.yaml"]
    cmd += ["--count", "1", "trainer.limit_train_batches=8", "trainer.limit_val_batches=1"]
    cmd += ["trainer.progress_bar=false", "checkpoint.every_n_train_steps=1", "trainer.num_sanity_val_steps=0"]
    job = (
        subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    )

    # Preempt task 0 once its trial has a checkpoint: USR1 to the batch script, as the time limit does.
    path = dest / "sweeps" / "arr" / "state.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        trials = json.loads(path.read_text())["trials"] if path.exists() else []
        mine = [t for t in trials if t["worker"] == f"{job}_0" and t.get("run_dir")]
        if mine and (Path(mine[0]["run_dir"]) / "checkpoints" / "last.ckpt").exists():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"task 0 never checkpointed: {tasks(job)}")
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], check=True)

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        infos = tasks(job)
        if len(infos) == 2 and all(i.get("JobState") in FINAL for i in infos.values()):
            break
        time.sleep(0.5)
    logs = {p.name: p.read_text() for p in tmp_path.glob("slurm-*.out")}
    assert {i["JobState"] for i in tasks(job).values()} == {"COMPLETED"}, logs
    assert int(tasks(job)[f"{job}_0"]["Restarts"]) >= 1, logs
    assert "requeueing job" in logs[f"slurm-{job}_0.out"]

    trials = json.loads(path.read_text())["trials"]
    assert [t["state"] for t in trials] == ["finished", "finished"], logs
    assert {t["worker"] for t in trials} == {f"{job}_0", f"{job}_1"}  # one sweep, both tasks in it
    assert len({t["run_name"] for t in trials}) == 2
    (resumed,) = [t for t in trials if t["attempts"] == 2]
    summary = json.loads((Path(resumed["run_dir"]) / "summary.json").read_text())
    assert summary["resumed_from"].endswith(".ckpt")
    assert (summary["epoch"], summary["global_step"], summary["stop_reason"]) == (3, 24, "max_epochs")
