"""`scaffold update` and `scaffold check` against real git repositories with three template versions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import scaffold.source
import yaml
from gen_helpers import (
    BIN,
    CHANGELOG,
    README_TAIL_V2,
    ROOT,
    V1,
    V2,
    V3,
    commit_all,
    engine_files,
    git,
    invoke,
    set_version,
    snapshot,
    template_engine,
    versions_repo,
)
from scaffold.history import HistoryInfo, write_bundle
from scaffold.manifest import MANIFEST_NAME, hash_tree

__all__ = ["versions_repo"]

PKG = "my_research"
ENGINE = f"src/{PKG}/engine"


def make_project(repo: Path, dest: Path, ref: str = V1, *data: str) -> Path:
    args = ["new", dest, "--defaults", "--template", repo, "--vcs-ref", ref]
    for item in data:
        args += ["--data", item]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return dest


def update(project: Path, repo: Path | None, *args: str):  # type: ignore[no-untyped-def]
    extra = ["--template", str(repo)] if repo is not None else []
    return invoke("update", project, *extra, *args)


def listed(out: str, verb: str, path: str) -> bool:
    """The update report lists `path` under `verb` (add, change, remove, merge, conflict, skip)."""
    return re.search(rf"^  {verb} +{re.escape(path)}\b", out, flags=re.MULTILINE) is not None


def answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def tags(project: Path) -> list[str]:
    return git(project, "tag", "--list").split()


@pytest.fixture
def project(versions_repo: Path, tmp_path: Path) -> Path:
    return make_project(versions_repo, tmp_path / "my-research")


def test_update_replaces_engine_merges_shared_and_keeps_research(project: Path, versions_repo: Path) -> None:
    # Research code edits and a shared-file edit that merges cleanly (top of the README).
    model = project / "src" / PKG / "model.py"
    model.write_text(model.read_text() + "\n# my research change\n")
    readme = project / "README.md"
    readme.write_text("<!-- my note -->\n" + readme.read_text())
    commit_all(project, "research")
    research_before = {p: (project / p).read_bytes() for p in ("src/my_research/model.py", "configs/default.yaml")}
    head_before = git(project, "rev-parse", "HEAD").strip()

    result = update(project, versions_repo, "--to", V2)
    assert result.exit_code == 0, result.output

    # The engine is exactly the target version's: changed, added and removed files.
    assert engine_files(project / ENGINE) == template_engine(versions_repo, V2)
    assert not (project / ENGINE / "legacy.py").exists()
    assert (project / ENGINE / "extras.py").is_file()
    manifest = json.loads((project / MANIFEST_NAME).read_text())
    assert manifest["version"] == "1.1.0"
    assert manifest["template_commit"] == V2
    assert manifest["files"] == hash_tree(project / ENGINE)
    # Answers: new version recorded, new question answered with its default, source absolute.
    recorded = answers(project)
    assert recorded["_commit"] == V2
    assert recorded["license"] == "MIT"
    assert recorded["_src_path"] == str(versions_repo)
    assert (project / "LICENSE").read_text() == "License: MIT\n"
    # Shared files: three-way merged, removed, added.
    text = readme.read_text()
    assert text.startswith("<!-- my note -->\n") and README_TAIL_V2 in text
    assert not (project / "CONTRIBUTING.md").exists()
    # Research code untouched, though the template changed model.py upstream.
    for path, blob in research_before.items():
        assert (project / path).read_bytes() == blob
    assert "src/my_research/model.py" in result.stdout  # reported as changed upstream, left as is
    # A backup tag at the old HEAD, migration notes, and how to finish.
    backup = [t for t in tags(project) if t.startswith("scaffold-backup-")]
    assert len(backup) == 1
    assert git(project, "rev-parse", backup[0]).strip() == head_before
    assert "rename `foo` to `bar`" in result.stdout
    assert listed(result.stdout, "remove", "legacy.py") and listed(result.stdout, "add", "extras.py")
    assert "git add -A && git commit" in result.stdout
    assert git(project, "rev-parse", "HEAD").strip() == head_before  # the user commits


def test_conflicting_shared_edit_is_reported(project: Path, versions_repo: Path) -> None:
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nMy own closing words.\n")  # where 1.1.0 appends too
    commit_all(project, "edit the end of the README")
    result = update(project, versions_repo, "--to", V2)
    assert result.exit_code == 1
    assert "1 file(s) need a manual merge" in result.stderr
    assert "README.md" in result.stderr
    assert "resolve the <<<<<<< yours" in result.stderr
    text = readme.read_text()
    assert "<<<<<<< yours" in text and f">>>>>>> scaffold {V2}" in text
    assert "My own closing words." in text and "Added in 1.1.0" in text
    # Everything else was still updated.
    assert answers(project)["_commit"] == V2
    assert engine_files(project / ENGINE) == template_engine(versions_repo, V2)


def test_dirty_tree_is_refused(project: Path, versions_repo: Path) -> None:
    (project / "src" / PKG / "model.py").write_text("# uncommitted\n")
    before = snapshot(project)
    result = update(project, versions_repo)
    assert result.exit_code == 1
    assert "uncommitted changes" in result.stderr
    assert "git add -A && git commit" in result.stderr and "git stash -u" in result.stderr
    assert "src/my_research/model.py" in result.stderr
    assert snapshot(project) == before
    assert tags(project) == []


def test_engine_edits_are_refused_then_forced(project: Path, versions_repo: Path) -> None:
    trainer = project / ENGINE / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n# my local engine hack\n")
    (project / ENGINE / "mine.py").write_text("X = 1\n")
    commit_all(project, "hack the engine")
    before = snapshot(project)

    result = update(project, versions_repo, "--to", V2)
    assert result.exit_code == 1
    assert "has local edits" in result.stderr and "--force" in result.stderr
    assert "modified: trainer.py" in result.stderr and "added:    mine.py" in result.stderr
    assert snapshot(project) == before
    assert tags(project) == []

    result = update(project, versions_repo, "--to", V2, "--force")
    assert result.exit_code == 0, result.output
    assert engine_files(project / ENGINE) == template_engine(versions_repo, V2)
    (backup,) = tags(project)
    patch = project / ".scaffold-backups" / f"{backup}.engine.patch"
    assert patch.is_file()
    text = patch.read_text()
    assert "+# my local engine hack" in text and "mine.py" in text
    assert f"{ENGINE}/trainer.py" in text
    assert str(patch.relative_to(project)) in result.stdout


def test_dry_run_changes_nothing(project: Path, versions_repo: Path) -> None:
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nMy own closing words.\n")
    commit_all(project, "edit")
    before, head = snapshot(project), git(project, "rev-parse", "HEAD")
    result = update(project, versions_repo, "--to", V2, "--dry-run")
    assert result.exit_code == 0, result.output
    assert snapshot(project) == before
    assert git(project, "rev-parse", "HEAD") == head
    assert tags(project) == []
    assert git(project, "status", "--porcelain") == ""
    out = result.stdout
    assert f"{V1} -> {V2}" in out
    assert (
        listed(out, "add", "extras.py") and listed(out, "remove", "legacy.py") and listed(out, "change", "trainer.py")
    )
    assert listed(out, "remove", "CONTRIBUTING.md") and listed(out, "add", "LICENSE")
    assert listed(out, "conflict", "README.md")
    assert "expected conflicts: 1 (README.md)" in out
    assert "license = 'MIT'" in out
    assert "rename `foo` to `bar`" in out
    assert "dry run: nothing was changed" in out


def test_second_update_is_a_no_op(project: Path, versions_repo: Path) -> None:
    assert update(project, versions_repo).exit_code == 0
    commit_all(project, "update")
    before, tag_list = snapshot(project), tags(project)
    result = update(project, versions_repo)
    assert result.exit_code == 0
    assert "already up to date" in result.stdout
    assert snapshot(project) == before
    assert tags(project) == tag_list
    assert git(project, "status", "--porcelain") == ""


def test_default_target_is_the_latest_and_notes_cover_each_version(project: Path, versions_repo: Path) -> None:
    result = update(project, versions_repo)
    assert result.exit_code == 0, result.output
    assert answers(project)["_commit"] == V3
    assert engine_files(project / ENGINE) == template_engine(versions_repo, V3)
    assert ".cache/" in (project / ".gitignore").read_text()
    assert "## 1.1.0" in result.stdout and "## 1.2.0" in result.stdout and "## 1.0.0" not in result.stdout


def test_two_updates_in_steps(project: Path, versions_repo: Path) -> None:
    assert update(project, versions_repo, "--to", "1.1.0").exit_code == 0  # a version finds its tag
    commit_all(project, "to 1.1.0")
    result = update(project, versions_repo, "--to", V3)
    assert result.exit_code == 0, result.output
    assert "## 1.2.0" in result.stdout and "## 1.1.0" not in result.stdout
    assert answers(project)["_commit"] == V3


def test_downgrade_is_refused(versions_repo: Path, tmp_path: Path) -> None:
    project = make_project(versions_repo, tmp_path / "my-research", V2)
    before = snapshot(project)
    result = update(project, versions_repo, "--to", V1)
    assert result.exit_code == 1
    assert f"refusing to downgrade from {V2} to {V1}" in result.stderr
    assert snapshot(project) == before


def test_unknown_target(project: Path, versions_repo: Path) -> None:
    result = update(project, versions_repo, "--to", "v9.9.9")
    assert result.exit_code == 2
    assert "has no version 'v9.9.9'" in result.stderr


def test_new_question_answered_with_data(project: Path, versions_repo: Path) -> None:
    result = update(project, versions_repo, "--to", V2, "--data", "license=Apache-2.0")
    assert result.exit_code == 0, result.output
    assert answers(project)["license"] == "Apache-2.0"
    assert (project / "LICENSE").read_text() == "License: Apache-2.0\n"


def test_unknown_data_key_on_update(project: Path, versions_repo: Path) -> None:
    result = update(project, versions_repo, "--to", V2, "--data", "licence=MIT")
    assert result.exit_code == 2
    assert "did you mean 'license'?" in result.stderr


def test_kept_deletion_of_a_shared_file(project: Path, versions_repo: Path) -> None:
    (project / "README.md").unlink()  # the researcher removed it; 1.1.0 changes it
    commit_all(project, "no readme")
    result = update(project, versions_repo, "--to", V2)
    assert result.exit_code == 0, result.output
    assert not (project / "README.md").exists()
    assert listed(result.stdout, "skip", "README.md") and "(you deleted it" in result.stdout


def test_relative_template_is_recorded_absolute(
    project: Path, versions_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(versions_repo.parent)
    result = invoke("update", project, "--template", versions_repo.name, "--to", V2)
    assert result.exit_code == 0, result.output
    assert answers(project)["_src_path"] == str(versions_repo)


def test_not_a_project(tmp_path: Path) -> None:
    result = invoke("update", tmp_path)
    assert result.exit_code == 1
    assert "has no .copier-answers.yml" in result.stderr


# -- check ---------------------------------------------------------------------------------
def test_check_reports_update_available(project: Path, versions_repo: Path) -> None:
    result = invoke("check", project, "--template", versions_repo)
    assert result.exit_code == 1
    assert f"template version: {V1}" in result.stdout
    assert f"latest available: {V3}" in result.stdout
    assert "update available" in result.stdout
    data = json.loads(invoke("check", project, "--template", versions_repo, "--json").stdout)
    assert data["update_available"] is True
    assert data["commit"] == V1 and data["latest"] == V3 and data["version"] == "1.0.0"
    assert data["engine_modified"] is False
    assert data["up_to_date"] is False


def test_check_current_and_edited(versions_repo: Path, tmp_path: Path) -> None:
    project = make_project(versions_repo, tmp_path / "my-research", V3)
    result = invoke("check", project, "--template", versions_repo)
    assert result.exit_code == 0, result.output
    assert "engine: unmodified" in result.stdout and "up to date" in result.stdout
    (project / ENGINE / "trainer.py").write_text("# edited\n")
    (project / ENGINE / "results.py").unlink()
    result = invoke("check", project, "--template", versions_repo, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["engine_modified"] is True
    assert data["engine_edits"] == {"modified": ["trainer.py"], "added": [], "deleted": ["results.py"]}
    assert data["update_available"] is False


# -- the template history inside the installed package, with no network ----------------------
@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # git may use no transport but local files: any network access fails loudly.
    monkeypatch.setenv("GIT_ALLOW_PROTOCOL", "file")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")


def test_update_from_installed_bundle(
    versions_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: None
) -> None:
    bundle = tmp_path / "pkg" / "template.bundle"
    write_bundle(versions_repo, bundle)
    head = git(versions_repo, "rev-parse", V3).strip()
    info = HistoryInfo("1.2.0", head, V3, V3)
    monkeypatch.setattr(scaffold.source, "_installed_data", lambda: (bundle, info))
    scaffold.source.installed_source.cache_clear()
    try:
        result = invoke("new", tmp_path / "my-research", "--defaults", "--vcs-ref", V1)
        assert result.exit_code == 0, result.output
        project = tmp_path / "my-research"
        assert answers(project)["_src_path"] == str(bundle)
        assert invoke("check", project).exit_code == 1
        result = invoke("update", project)
        assert result.exit_code == 0, result.output
        assert answers(project)["_commit"] == V3
        assert engine_files(project / ENGINE) == template_engine(versions_repo, V3)
        commit_all(project, "update")
        assert invoke("check", project).exit_code == 0
    finally:
        scaffold.source.installed_source.cache_clear()


@pytest.mark.slow
def test_update_with_a_built_wheel_offline(tmp_path: Path, offline: None) -> None:
    """Build scaffold's wheel from a repository with two tagged versions; that wheel alone
    (no source tree, no network) creates a project at the old version and updates it."""
    src = tmp_path / "src"
    files = git(
        ROOT,
        "ls-files",
        "-co",
        "--exclude-standard",
        "--",
        "pyproject.toml",
        "hatch_build.py",
        "README.md",
        "CHANGELOG.md",
        "copier.yml",
        "generator",
        "engine",
        "template",
    ).split("\n")
    for name in filter(None, files):
        if not os.path.lexists(ROOT / name) or "__pycache__" in name:
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_symlink():
            (src / name).symlink_to(os.readlink(ROOT / name))
        else:
            (src / name).write_bytes((ROOT / name).read_bytes())
    (src / "CHANGELOG.md").write_text(CHANGELOG)
    git(src, "init", "-q")
    set_version(src, "1.0.0")
    commit_all(src, "1.0.0")
    git(src, "tag", V1)
    set_version(src, "1.1.0")
    (src / "engine" / "extras.py").write_text("EXTRA = 1\n")
    commit_all(src, "1.1.0")
    git(src, "tag", V2)

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("scaffold-1.1.0-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    assert "scaffold/_data/template.bundle" in names
    assert not any(n.startswith(("engine/", "generator/", "template/")) for n in names)

    env = {**os.environ, "PYTHONPATH": str(site)}
    cli = [sys.executable, "-c", "import sys; from scaffold.cli import main; sys.argv[0] = 'scaffold'; main()"]
    work = tmp_path / "work"
    work.mkdir()

    def scaffold_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], cwd=work, env=env, capture_output=True, text=True)

    assert scaffold_cli("--version").stdout.strip() == "scaffold 1.1.0"
    made = scaffold_cli("new", "my-research", "--defaults", "--vcs-ref", V1)
    assert made.returncode == 0, made.stderr
    project = work / "my-research"
    assert answers(project)["_commit"] == V1
    assert scaffold_cli("check", "my-research").returncode == 1
    updated = scaffold_cli("update", "my-research")
    assert updated.returncode == 0, updated.stderr
    assert answers(project)["_commit"] == V2
    assert (project / ENGINE / "extras.py").read_text() == "EXTRA = 1\n"
    assert '__version__ = "1.1.0"' in (project / ENGINE / "version.py").read_text()


@pytest.mark.slow
def test_project_tests_pass_after_update(project: Path, versions_repo: Path) -> None:
    assert update(project, versions_repo).exit_code == 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"PYTHONPATH": str(project / "src"), "WANDB_MODE": "disabled", "PYTHONDONTWRITEBYTECODE": "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout


# -- the project's recorded source, suggested commands, unfinished updates -------------------
def test_check_and_update_follow_the_recorded_source(project: Path, versions_repo: Path) -> None:
    result = invoke("check", project)  # no --template: the source .copier-answers.yml records
    assert result.exit_code == 1, result.output
    assert f"latest available: {V3} (from {versions_repo} (recorded in .copier-answers.yml))" in result.stdout
    assert "update available: scaffold update " in result.stdout and "--template" not in result.stdout
    updated = invoke("update", project)
    assert updated.exit_code == 0, updated.output
    assert f"(from {versions_repo} (recorded" in updated.stdout
    assert answers(project)["_commit"] == V3


def test_suggested_update_command_is_complete(
    project: Path, versions_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "mirror"
    git(tmp_path, "clone", "-q", str(versions_repo), str(other))
    monkeypatch.chdir(tmp_path)
    result = invoke("check", project.name, "--template", other)
    line = next(x for x in result.stdout.splitlines() if x.startswith("update available:"))
    command = line.removeprefix("update available: ").split(" (preview")[0]
    assert command == f"scaffold update {project.name} --template {other}"
    updated = invoke(*command.split()[1:])  # runs as printed
    assert updated.exit_code == 0, updated.output
    assert answers(project)["_src_path"] == str(other)


def test_recorded_source_gone(project: Path, versions_repo: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    versions_repo.rename(moved)
    try:
        for command in ("check", "update"):
            result = invoke(command, project)
            assert result.exit_code == 1
            assert f"template source {versions_repo} (recorded in .copier-answers.yml) is gone" in result.stderr
            assert "--template SRC" in result.stderr
        assert invoke("check", project, "--template", moved).exit_code == 1  # the fix works
    finally:
        moved.rename(versions_repo)


def test_project_newer_than_the_source(versions_repo: Path, tmp_path: Path) -> None:
    project = make_project(versions_repo, tmp_path / "my-research", V3)
    old = tmp_path / "old"
    git(tmp_path, "clone", "-q", "--no-tags", str(versions_repo), str(old))
    git(old, "reset", "-q", "--hard", git(versions_repo, "rev-list", "-n", "1", V1).strip())
    git(old, "tag", V1)
    result = invoke("check", project, "--template", old, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["newer_than_source"] is True and data["update_available"] is False and data["latest"] == V1
    text = invoke("check", project, "--template", old).stdout
    assert f"the project ({V3}) is newer than" in text and "up to date" not in text


def test_force_reapply_works_as_printed(project: Path, versions_repo: Path) -> None:
    callbacks = project / ENGINE / "callbacks.py"
    callbacks.write_text("# my local engine note\n" + callbacks.read_text())
    commit_all(project, "hack the engine")
    result = update(project, versions_repo, "--to", V2, "--force")
    assert result.exit_code == 0, result.output
    command = re.search(r"reapply them with: (git apply --3way \S+)", result.stdout).group(1)  # type: ignore[union-attr]
    assert "after committing the update" in result.stdout
    git(project, "add", "-A")
    assert ".scaffold-backups" not in git(project, "diff", "--cached", "--name-only")  # git ignores backups
    git(project, "commit", "-q", "-m", "update")
    assert git(project, "status", "--porcelain") == ""
    git(project, *command.split()[1:])
    assert callbacks.read_text().startswith("# my local engine note\n")


def test_force_reapply_works_for_a_project_of_an_unreleased_build(versions_repo: Path, tmp_path: Path) -> None:
    # A development build: V1 plus an engine change, no tag. The source the update uses later
    # (the released history) does not have that commit, so the merge base falls back to V1.
    dev = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(versions_repo), str(dev))
    git(dev, "checkout", "-q", V1)
    trainer_src = dev / "engine" / "trainer.py"
    trainer_src.write_text(trainer_src.read_text() + "\n# a development change\n")
    commit_all(dev, "unreleased engine change")
    project = make_project(dev, tmp_path / "my-research", "HEAD")
    assert answers(project)["_commit"].startswith(f"{V1}-1-g")
    callbacks = project / ENGINE / "callbacks.py"
    callbacks.write_text("# my local engine note\n" + callbacks.read_text())
    commit_all(project, "hack the engine")

    result = update(project, versions_repo, "--to", V2, "--force")
    assert result.exit_code == 0, result.output
    assert "merging against v1.0.0 instead" in result.stdout
    (backup,) = tags(project)
    text = (project / ".scaffold-backups" / f"{backup}.engine.patch").read_text()
    assert "a development change" not in text  # only the user's edit: built against the recorded engine
    command = re.search(r"reapply them with: (git apply --3way \S+)", result.stdout).group(1)  # type: ignore[union-attr]
    commit_all(project, "update")
    git(project, *command.split()[1:])
    assert callbacks.read_text().startswith("# my local engine note\n")
    assert git(project, "diff", "HEAD", "--name-only").split() == [f"{ENGINE}/callbacks.py"]  # nothing else


def test_an_update_that_changes_dependencies_says_to_reinstall(
    project: Path, versions_repo: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "deps"
    git(tmp_path, "clone", "-q", str(versions_repo), str(repo))
    git(repo, "checkout", "-q", V3)
    pyproject = repo / "template" / "project" / "pyproject.toml.jinja"
    pyproject.write_text(pyproject.read_text().replace("dependencies = [\n", 'dependencies = [\n  "einops>=0.7",\n', 1))
    set_version(repo, "1.3.0")
    commit_all(repo, "1.3.0: einops")
    git(repo, "tag", "v1.3.0")
    plain = update(project, versions_repo, "--to", V2)  # no dependency change: no advice
    assert plain.exit_code == 0, plain.output
    assert "reinstall" not in plain.stdout
    commit_all(project, "update to 1.1.0")
    dry = update(project, repo, "--to", "v1.3.0", "--dry-run")
    assert (
        "pyproject.toml: the dependencies would change; after the update reinstall: python -m pip install -e '.[dev]'"
        in dry.stdout
    )
    result = update(project, repo, "--to", "v1.3.0")
    assert result.exit_code == 0, result.output
    assert '"einops>=0.7"' in (project / "pyproject.toml").read_text()
    assert (
        "dependencies changed: reinstall it before running anything: python -m pip install -e '.[dev]'" in result.stdout
    )


def test_dry_run_says_would_and_check_sees_unfinished_updates(project: Path, versions_repo: Path) -> None:
    readme = project / "README.md"
    readme.write_text(readme.read_text() + "\nMy own closing words.\n")
    commit_all(project, "edit")
    plan = update(project, versions_repo, "--to", V2, "--dry-run")
    assert "README.md  (would write conflict markers)" in plan.stdout
    assert "markers written" not in plan.stdout
    assert update(project, versions_repo, "--to", V2).exit_code == 1  # a conflict in README.md
    status = invoke("check", project, "--json")
    assert status.exit_code == 1
    data = json.loads(status.stdout)
    assert data["conflicts"] == ["README.md"]
    assert data["uncommitted_update"] == [".copier-answers.yml", ".scaffold-manifest.json"]
    readme.write_text(readme.read_text().replace("<<<<<<< yours\n", "").split("=======")[0])
    commit_all(project, "resolved")
    data = json.loads(invoke("check", project, "--json").stdout)
    assert data["conflicts"] == [] and data["uncommitted_update"] == []


def test_plain_copier_update_is_accepted_and_recorded(project: Path, versions_repo: Path) -> None:
    research = (project / "src" / PKG / "model.py").read_bytes()
    proc = subprocess.run(
        [str(BIN / "copier"), "update", "--defaults", "--vcs-ref", V2, str(project)],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_ALLOW_PROTOCOL": "file"},
    )
    assert proc.returncode == 0, proc.stderr
    assert answers(project)["_commit"] == V2
    assert json.loads((project / MANIFEST_NAME).read_text())["template_commit"] == V1  # copier leaves it
    commit_all(project, "copier update")
    result = invoke("check", project, "--json")
    data = json.loads(result.stdout)
    assert data["engine_modified"] is False and data["stale_manifest"] == V1
    assert data["update_available"] is True  # V3 exists; nothing else is wrong
    text = invoke("check", project).stdout
    assert "without scaffold (e.g. plain copier update)" in text
    recorded = invoke("update", project, "--to", V2)
    assert recorded.exit_code == 0, recorded.output
    manifest = json.loads((project / MANIFEST_NAME).read_text())
    assert manifest["template_commit"] == V2 and manifest["files"] == hash_tree(project / ENGINE)
    assert (project / "src" / PKG / "model.py").read_bytes() == research


def test_update_keeps_the_jean_zay_answers_and_changes_them_with_data(versions_repo: Path, tmp_path: Path) -> None:
    data = ("cluster=jean-zay", "jz_gpu=a100", "jz_account=abc@a100")
    project = make_project(versions_repo, tmp_path / "my-research", V1, *data)
    result = update(project, versions_repo, "--to", V2)
    assert result.exit_code == 0, result.output
    assert {k: answers(project)[k] for k in ("cluster", "jz_gpu", "jz_account")} == dict(d.split("=") for d in data)
    text = (project / "scripts" / "slurm.sbatch").read_text()
    assert "#SBATCH --account=abc@a100" in text and "#SBATCH --constraint=a100" in text
    # Another card later: the answers change, and the script with them.
    commit_all(project, "update to 1.1.0")
    result = update(project, versions_repo, "--to", V3, "--data", "jz_gpu=h100", "--data", "jz_account=abc@h100")
    assert result.exit_code == 0, result.output
    assert answers(project)["jz_gpu"] == "h100"
    text = (project / "scripts" / "slurm.sbatch").read_text()
    assert "#SBATCH --constraint=h100" in text and "module load arch/h100" in text
