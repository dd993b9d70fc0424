"""What `scaffold new` renders: files, answers, names, toggles, the vendored engine and its manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import tomllib
import yaml
from gen_helpers import ROOT, VERSION, engine_files, git, invoke, new_project, template_repo
from scaffold.history import ENGINE_LINK, TEMPLATE_PATHS, build_history, write_bundle
from scaffold.manifest import MANIFEST_NAME, hash_tree
from scaffold.names import derive_package_name

__all__ = ["template_repo"]

RESEARCH = ["model.py", "data.py", "train.py", "__init__.py"]


@pytest.fixture(scope="module")
def project(template_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_project(template_repo, tmp_path_factory.mktemp("render") / "my-research")


def _files(folder: Path) -> set[str]:
    out = set()
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and ".git" not in rel.parts and "__pycache__" not in rel.parts:
            out.add(rel.as_posix())
    return out


def test_default_tree(project: Path) -> None:
    files = _files(project)
    expected = {
        "pyproject.toml",
        "README.md",
        ".copier-answers.yml",
        ".gitignore",
        MANIFEST_NAME,
        "configs/default.yaml",
        "configs/sweep.yaml",
        "tests/test_smoke.py",
        "scripts/slurm.sbatch",
        "scripts/sweep.sbatch",
        "src/my_research/sweep.py",
        ".github/workflows/ci.yml",
        *(f"src/my_research/{name}" for name in RESEARCH),
    }
    assert expected <= files
    engine_files = {f for f in files if f.startswith("src/my_research/engine/")}
    assert {f"src/my_research/engine/{name}" for name in hash_tree(ROOT / "engine")} == engine_files
    # Nothing else: no template leftovers such as .jinja files or empty conditional names.
    assert files - expected - engine_files == set()


def test_answers_file(project: Path, template_repo: Path) -> None:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == f"v{VERSION}"
    assert answers["_src_path"] == str(template_repo)
    assert Path(answers["_src_path"]).is_absolute()
    assert answers["project_name"] == "my-research"
    assert answers["package_name"] == "my_research"
    assert answers["wandb_project"] == "my-research"
    assert answers["wandb_entity"] == ""
    assert answers["example"] == "digits"
    assert answers["slurm"] is True
    assert answers["ci"] == "github"


def test_engine_is_vendored_verbatim(project: Path) -> None:
    engine = project / "src" / "my_research" / "engine"
    assert not engine.is_symlink()
    for name in hash_tree(ROOT / "engine"):
        assert (engine / name).read_bytes() == (ROOT / "engine" / name).read_bytes(), name


def test_manifest_matches_engine(project: Path) -> None:
    manifest = json.loads((project / MANIFEST_NAME).read_text())
    assert manifest["version"] == VERSION
    assert manifest["template_commit"] == f"v{VERSION}"
    assert manifest["engine_dir"] == "src/my_research/engine"
    assert manifest["files"] == hash_tree(project / "src" / "my_research" / "engine")
    assert "__init__.py" in manifest["files"]


def test_first_commit_and_clean_tree(project: Path) -> None:
    log = git(project, "log", "--format=%s").splitlines()
    assert log == [f"New project from scaffold {VERSION}"]
    assert git(project, "status", "--porcelain") == ""
    # Run outputs stay out of git.
    ignored = (project / ".gitignore").read_text().split()
    assert "runs/" in ignored and "wandb/" in ignored


def test_pyproject(project: Path) -> None:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"]
    assert "torch>=2.4" in deps
    assert any(d.startswith("torchmetrics") for d in deps)
    assert any(d.startswith("wandb") for d in deps)
    assert any(d.startswith("pyyaml") for d in deps)
    assert any(d.startswith("rich") for d in deps)  # the engine's progress bar
    assert any(d.startswith("scikit-learn") for d in deps)
    assert data["project"]["name"] == "my-research"
    assert data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/my_research"]


def test_default_config_lists_every_engine_key(project: Path) -> None:
    from engine import config as engine_config

    cfg = yaml.safe_load((project / "configs" / "default.yaml").read_text())
    sections = {
        "trainer": engine_config.TrainerConfig,
        "checkpoint": engine_config.CheckpointConfig,
        "early_stopping": engine_config.EarlyStoppingConfig,
        "wandb": engine_config.WandbConfig,
    }
    for name, cls in sections.items():
        assert set(cfg[name]) == {f.name for f in dataclasses.fields(cls)}, name
    base_data = {f.name for f in dataclasses.fields(engine_config.DataConfig)}
    assert base_data <= set(cfg["data"])
    top = {f.name for f in dataclasses.fields(engine_config.Config)}
    assert set(cfg) == top
    assert cfg["wandb"]["project"] == "my-research"
    assert cfg["wandb"]["entity"] is None
    # Every key has a comment.
    lines = (project / "configs" / "default.yaml").read_text().splitlines()
    keyed = [line for line in lines if line.strip() and not line.lstrip().startswith("#") and not line.endswith(":")]
    assert all("#" in line for line in keyed), [line for line in keyed if "#" not in line]


def test_sweep_config(project: Path) -> None:
    sweep = yaml.safe_load((project / "configs" / "sweep.yaml").read_text())
    assert sweep["metric"] == {"name": "val_acc", "goal": "maximize"}
    assert sweep["command"] == ["${env}", "${interpreter}", "-m", "my_research.train", "${args}"]
    assert all(key.startswith(("model.", "trainer.")) for key in sweep["parameters"])


def test_sweep_script(project: Path) -> None:
    """One sweep worker per array task, named after the array task, requeued when a trial was stopped."""
    script = project / "scripts" / "sweep.sbatch"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    for needle in (
        'python -m my_research.sweep "$@"',
        'SCAFFOLD_SWEEP_WORKER="${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"',
        "#SBATCH --signal=B:USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --output=slurm-%A_%a.out",
        'scontrol requeue "$SLURM_JOB_ID"',
        "same #SBATCH lines as scripts/slurm.sbatch",
    ):
        assert needle in text
    sweep = yaml.safe_load((project / "configs" / "sweep.yaml").read_text())
    assert sweep["name"] == "my_research-sweep"
    assert sweep["early_terminate"] == {"type": "hyperband", "min_iter": 3, "eta": 3}


def test_slurm_script(project: Path) -> None:
    script = project / "scripts" / "slurm.sbatch"
    text = script.read_text()
    assert os.access(script, os.X_OK)
    for needle in (
        "torchrun",
        "--rdzv_backend=c10d",
        "#SBATCH --signal=B:USR1@120",
        "scontrol requeue",
        "resume=auto",
        "-m my_research.train",
        "#SBATCH --ntasks-per-node=1",
    ):
        assert needle in text


def test_ci_workflow(project: Path) -> None:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    steps = " ".join(str(step.get("run", "")) for step in workflow["jobs"]["test"]["steps"])
    assert "pytest" in steps and "pip install -e" in steps


def test_readme_for_the_researcher(project: Path) -> None:
    readme = (project / "README.md").read_text()
    for needle in (
        "python -m my_research.train",
        "torchrun",
        "trainer.devices",
        "wandb sync",
        "resume=last",
        "scaffold update",
        "scaffold check",
        "sbatch",
        "--help",
        "project root",
        "resume=last trainer.max_epochs=30",  # what may change on resume
        "saved mid-epoch with a global batch",  # what may not, with its error
    ):
        assert needle in readme, needle


@pytest.mark.parametrize(
    ("project_name", "package_name"),
    [("Vision-Lab.v2", "vision_lab_v2"), ("my_proj", "my_proj"), ("A--B", "a_b")],
)
def test_package_name_derivation(template_repo: Path, tmp_path: Path, project_name: str, package_name: str) -> None:
    assert derive_package_name(project_name) == package_name
    dest = new_project(template_repo, tmp_path / "p", f"project_name={project_name}")
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["package_name"] == package_name  # the template derives the same name
    assert (dest / "src" / package_name / "engine" / "__init__.py").is_file()
    assert f"python -m {package_name}.train" in (dest / "README.md").read_text()


def test_minimal_example_and_toggles(template_repo: Path, tmp_path: Path) -> None:
    dest = new_project(
        template_repo,
        tmp_path / "p",
        "project_name=tiny",
        "example=none",
        "slurm=false",
        "ci=none",
        "wandb_entity=my-lab",
        "author=Ada Lovelace <ada@example.org>",
        'description=Say "hi"',
    )
    assert not (dest / "scripts").exists()
    assert not (dest / ".github").exists()
    model = (dest / "src" / "tiny" / "model.py").read_text()
    assert "class MLPClassifier(Module)" in model
    assert "SyntheticDataModule" in (dest / "src" / "tiny" / "data.py").read_text()
    assert "MLPClassifier" in (dest / "src" / "tiny" / "train.py").read_text()
    data = tomllib.loads((dest / "pyproject.toml").read_text())
    assert not any(d.startswith("scikit-learn") for d in data["project"]["dependencies"])
    assert data["project"]["authors"] == [{"name": "Ada Lovelace", "email": "ada@example.org"}]
    assert data["project"]["description"] == 'Say "hi"'
    cfg = yaml.safe_load((dest / "configs" / "default.yaml").read_text())
    assert cfg["wandb"]["entity"] == "my-lab"
    assert set(cfg["model"]) == {"hidden", "lr"}  # the model's sizes come from the data (data.in_features)
    assert "slurm" not in (dest / "README.md").read_text().lower()
    compile((dest / "src" / "tiny" / "__init__.py").read_text(), "__init__.py", "exec")


def test_examples_keep_the_gpu_fed(project: Path, template_repo: Path, tmp_path: Path) -> None:
    """The digits example's training accuracy skips torchmetrics' input checks (torch.unique waits for
    the GPU every step); the minimal example pins its loaders when a GPU is there (asynchronous copies)."""
    import subprocess
    import sys

    tiny = new_project(template_repo, tmp_path / "p", "project_name=tiny", "example=none")
    code = (
        "import torch\n"
        "from my_research.model import DigitsClassifier\n"
        "m = DigitsClassifier()\n"
        "print(m.train_acc.validate_args, m.val_acc.validate_args, m.test_acc.validate_args)\n"
        "from tiny.data import SyntheticDataModule\n"
        "d = SyntheticDataModule(); d.setup('fit')\n"
        "cuda = torch.cuda.is_available()\n"
        "print(d.train_dataloader().pin_memory is cuda, d.val_dataloader().pin_memory is cuda)\n"
    )
    path = os.pathsep.join([str(project / "src"), str(tiny / "src")])
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "True", "True", "True", "True"]


def test_installed_bundle_renders_its_own_version(tmp_path: Path) -> None:
    # Without --template, scaffold renders the history shipped inside the installed package.
    from scaffold.source import installed_source

    source = installed_source()
    dest = tmp_path / "p"
    result = invoke("new", dest, "--defaults")
    assert result.exit_code == 0, result.output
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["_commit"] == source.commit  # v<version>, or v<version>-N-g<hash> after it
    assert Path(answers["_src_path"]).is_absolute()
    manifest = json.loads((dest / MANIFEST_NAME).read_text())
    assert manifest["version"] == VERSION


# -- the template history that wheels ship --------------------------------------------------
def test_history_is_reproducible(tmp_path: Path) -> None:
    # Fixed commit metadata: every build from the same tree agrees on the commit a version is.
    first = build_history(ROOT, tmp_path / "a", VERSION)
    second = build_history(ROOT, tmp_path / "b", VERSION)
    assert first.commit == second.commit
    assert first.ref == second.ref  # the release tag, or the hash of a development build after it
    assert git(tmp_path / "a", "tag", "--list").split() == git(tmp_path / "b", "tag", "--list").split()
    assert f"v{VERSION}" in git(tmp_path / "a", "tag", "--list").split()
    files = git(tmp_path / "a", "ls-files").split()
    assert "copier.yml" in files and "template/copier.yml" in files and "engine/__init__.py" in files
    assert not any(f.startswith(("tests/", "generator/", "ci/", ".venv")) for f in files)


def test_history_from_a_tree_without_git(tmp_path: Path) -> None:
    # An sdist: no .git, and the template's engine symlink is gone; the history restores it.
    src = tmp_path / "sdist"
    src.mkdir()
    for top in TEMPLATE_PATHS:
        path = ROOT / top
        if path.is_dir():
            shutil.copytree(path, src / top, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.is_file():
            shutil.copy2(path, src / top)
    (src / ENGINE_LINK[0]).unlink()
    info = build_history(src, tmp_path / "repo")
    assert info.version == VERSION and info.ref == f"v{VERSION}"
    assert os.readlink(tmp_path / "repo" / ENGINE_LINK[0]) == ENGINE_LINK[1]
    bundle = tmp_path / "t.bundle"
    write_bundle(tmp_path / "repo", bundle)
    dest = new_project(bundle, tmp_path / "my-research")
    assert engine_files(dest / "src" / "my_research" / "engine") == engine_files(ROOT / "engine")


def _directives(script: Path) -> dict[str, str]:
    """The active #SBATCH options of a job script: {"--qos": "qos_gpu-t3", "--hint": "nomultithread", ...}."""
    out = {}
    for line in script.read_text().splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line.split()[1].partition("=")
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("gpu", "gpus", "cpus", "qos", "arch"),
    [
        ("v100-16g", 4, 10, "qos_gpu-t3", None),
        ("v100-32g", 4, 10, "qos_gpu-t3", None),
        ("a100", 8, 8, "qos_gpu_a100-t3", "arch/a100"),
        ("h100", 4, 24, "qos_gpu_h100-t3", "arch/h100"),
    ],
)
def test_jean_zay_script(template_repo: Path, tmp_path: Path, gpu: str, gpus: int, cpus: int, qos: str, arch) -> None:
    """IDRIS's settings for each card, active: one srun task per GPU with the card's CPUs per GPU."""
    account = f"xyz@{gpu.split('-')[0]}"
    dest = new_project(template_repo, tmp_path / "p", "cluster=jean-zay", f"jz_gpu={gpu}", f"jz_account={account}")
    script = dest / "scripts" / "slurm.sbatch"
    sbatch = _directives(script)
    assert sbatch["--account"] == account and sbatch["--constraint"] == gpu and sbatch["--qos"] == qos
    assert sbatch["--time"] == "20:00:00"  # the t3 QoS's limit
    assert sbatch["--hint"] == "nomultithread"
    assert sbatch["--ntasks-per-node"] == sbatch["--gpus-per-node"] == str(gpus)
    assert sbatch["--cpus-per-task"] == str(cpus)
    text = script.read_text()
    lines = text.splitlines()
    assert "module purge" in lines
    assert ("module load " + arch in text) if arch else ("module load arch/" not in text)
    assert lines.index("module purge") > max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert 'module load "${PYTORCH_MODULE:-pytorch-gpu/py3/' in text and "SCAFFOLD_ENV" in text
    assert "http://www.idris.fr/" in text and "-dev" in text  # defaults cite IDRIS; the dev QoS is explained
    subprocess_ok = __import__("subprocess").run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert subprocess_ok.returncode == 0, subprocess_ok.stderr
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert (answers["cluster"], answers["jz_gpu"], answers["jz_account"]) == ("jean-zay", gpu, account)
    assert "## Jean Zay" in (dest / "README.md").read_text()
    # The sweep's array tasks run on the same card and account, one GPU and its CPUs each.
    sweep = dest / "scripts" / "sweep.sbatch"
    workers = _directives(sweep)
    assert (workers["--account"], workers["--constraint"], workers["--qos"]) == (account, gpu, qos)
    assert workers["--gpus-per-node"] == "1" and workers["--cpus-per-task"] == str(cpus)
    assert workers["--time"] == "20:00:00" and workers["--hint"] == "nomultithread"
    assert "module purge" in sweep.read_text().splitlines()
    checked = __import__("subprocess").run(["bash", "-n", str(sweep)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_jean_zay_account_must_match_the_card(template_repo: Path, tmp_path: Path) -> None:
    result = invoke(
        "new", tmp_path / "p", "--defaults", "--template", template_repo,
        "--data", "cluster=jean-zay", "--data", "jz_gpu=h100", "--data", "jz_account=abc@v100",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "project@h100 account, not abc@v100" in result.output + (result.stderr or "")
    assert not (tmp_path / "p" / "scripts").exists()


def test_generic_script_has_no_jean_zay_settings(project: Path) -> None:
    sbatch = _directives(project / "scripts" / "slurm.sbatch")
    assert "--account" not in sbatch and "--qos" not in sbatch and "--constraint" not in sbatch
    assert sbatch["--ntasks-per-node"] == "1" and sbatch["--cpus-per-task"] == "32"
    assert "module purge" not in (project / "scripts" / "slurm.sbatch").read_text().splitlines()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["cluster"] == "generic" and "jz_gpu" not in answers
