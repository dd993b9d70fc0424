"""End to end: the `scaffold` console script makes a project that installs, trains, and passes
its own tests and lint. The project is installed into a private folder (PYTHONPATH), so the
shared environment and its torch stay untouched.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from gen_helpers import BIN, invoke, template_repo

__all__ = ["template_repo"]

pytestmark = pytest.mark.slow


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env.update({"WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def _install(project: Path, site: Path) -> dict[str, str]:
    """pip-install the project (no deps: torch and friends are already here) into `site`."""
    _run(
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
            str(project),
        ],
        cwd=project,
    )
    return {"PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    """A project made by the installed console script from the installed template."""
    package = f"e2e_{uuid.uuid4().hex[:8]}"
    base = tmp_path_factory.mktemp("e2e")
    project = base / "proj"
    scaffold = BIN / "scaffold"
    _run([str(scaffold), "new", str(project), "--defaults", "--data", f"package_name={package}"], cwd=base)
    env = _install(project, base / "site")
    return project, package, env


def test_trains_one_epoch(digits_project: tuple[Path, str, dict[str, str]], tmp_path: Path) -> None:
    project, package, env = digits_project
    out = tmp_path / "runs"
    _run(
        [
            sys.executable,
            "-m",
            f"{package}.train",
            "trainer.max_epochs=1",
            "wandb.mode=disabled",
            f"output_dir={out}",
            "run_name=e2e",
            "trainer.progress_bar=false",
        ],
        cwd=project,
        env=env,
    )
    run_dir = out / "e2e"
    summary = json.loads((run_dir / "summary.json").read_text())
    # 1797 digits, 20% held out -> 1438 training images -> 12 batches of 128.
    assert summary["global_step"] == 12
    assert summary["epoch"] == 1
    assert summary["stop_reason"] == "max_epochs"
    assert summary["world_size"] == 1
    assert summary["wandb_run_id"] is None
    assert math.isfinite(summary["metrics"]["train_loss"])
    assert summary["metrics"]["val_acc"] > 0.5  # chance is 0.1
    assert summary["best_model_score"] == pytest.approx(summary["metrics"]["val_acc"])
    assert Path(summary["best_model_path"]).name.endswith(".ckpt")
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert isinstance(state, dict) and state
    config = (run_dir / "config.yaml").read_text()
    assert "max_epochs: 1" in config


def test_project_tests_and_lint_pass(digits_project: tuple[Path, str, dict[str, str]]) -> None:
    project, _, env = digits_project
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert "1 passed" in proc.stdout
    _run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=project)
    _run([str(BIN / "ruff"), "format", "--check", "--no-cache", "."], cwd=project)


def test_minimal_example_trains(template_repo: Path, tmp_path: Path) -> None:
    package = f"e2e_none_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "proj"
    result = invoke(
        "new",
        project,
        "--defaults",
        "--template",
        template_repo,
        "--data",
        f"package_name={package}",
        "--data",
        "example=none",
    )
    assert result.exit_code == 0, result.output
    env = {"PYTHONPATH": str(project / "src")}
    out = tmp_path / "runs"
    _run(
        [
            sys.executable,
            "-m",
            f"{package}.train",
            "trainer.max_epochs=3",
            "wandb.mode=disabled",
            f"output_dir={out}",
            "run_name=none",
            "trainer.progress_bar=false",
        ],
        cwd=project,
        env=env,
    )
    summary = json.loads((out / "none" / "summary.json").read_text())
    assert summary["epoch"] == 3
    assert summary["global_step"] == 3 * math.ceil(2048 * 0.8 / 64)
    assert summary["metrics"]["val_acc"] > 0.5  # 4 classes: chance is 0.25
    proc = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert "1 passed" in proc.stdout
    _run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=project)
    _run([str(BIN / "ruff"), "format", "--check", "--no-cache", "."], cwd=project)
