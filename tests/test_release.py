"""Releases as users make and take them: ci/release, real wheels, real git repositories.

Everything happens in a clone of this repository in a temporary folder (never in the
repository itself): wheel A is built from the clone as it is, a project is made with it,
the clone gets an engine change and a template change and `ci/release` makes the next
version, and wheel B is built from a fresh clone without tags. Installed in turn into one
small venv, B's `check` and `update` (no --template) must update A's project.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml
from gen_helpers import GIT_ENV, ROOT, commit_all, git, snapshot
from scaffold.history import UnreleasedError, check_released, read_version, recorded_versions, releases
from scaffold.manifest import hash_tree

pytestmark = pytest.mark.slow

PKG = "my_research"
ENGINE = f"src/{PKG}/engine"
ENV = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
ENV.pop("SCAFFOLD_UNRELEASED", None)


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def clone_repository(dest: Path) -> Path:
    """A clone of this repository with the working tree's uncommitted changes committed on top."""
    run("git", "clone", "-q", ROOT, dest, cwd=ROOT.parent)
    changed = git(ROOT, "ls-files", "-z", "-m", "-o", "--exclude-standard").split("\0")
    deleted = git(ROOT, "ls-files", "-z", "-d").split("\0")
    for name in filter(None, changed):
        src, dst = ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            dst.write_bytes(src.read_bytes())
            dst.chmod(src.stat().st_mode)
    for name in filter(None, deleted):
        (dest / name).unlink(missing_ok=True)
    if git(dest, "status", "--porcelain").strip():
        commit_all(dest, "Work in progress")
    return dest


def build_wheel(repo: Path, dist: Path) -> Path:
    """`pip wheel .` as a release manager runs it (about a second)."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, ".", cwd=repo)
    (wheel,) = dist.glob("scaffold-*.whl")
    return wheel


def make_venv(dest: Path) -> Path:
    """A venv without pip (fast); `install` puts a wheel in it, without dependencies."""
    venv.create(dest, with_pip=False)
    return dest / "bin"


def install(wheel: Path, bindir: Path) -> None:
    """Install (or upgrade to) `wheel`, then let the venv see this interpreter's packages (copier,
    typer...) behind its own. pip runs without that view, so it only ever touches the venv."""
    (site,) = bindir.parent.glob("lib/python*/site-packages")
    outer = site / "zz_outer.pth"
    outer.unlink(missing_ok=True)
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        bindir / "python",
        "install",
        "-q",
        "--no-deps",
        wheel,
        cwd=wheel.parent,
    )
    outer.write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")


def test_two_releases_update_a_project_without_template(tmp_path: Path) -> None:
    repo = clone_repository(tmp_path / "scaffold")
    version = read_version(repo)
    if not any(str(v) == version for v in releases(repo)):
        run(repo / "ci" / "release", version, cwd=repo)  # the first release of this version
    wheel_a = build_wheel(repo, tmp_path / "dist-a")
    bindir = make_venv(tmp_path / "venv")
    install(wheel_a, bindir)
    scaffold = bindir / "scaffold"
    work = tmp_path / "work"
    work.mkdir()
    assert run(scaffold, "--version", cwd=work).stdout.strip() == f"scaffold {version}"
    run(scaffold, "new", "my-research", "--defaults", cwd=work)
    project = work / "my-research"
    model = project / "src" / PKG / "model.py"
    model.write_text(model.read_text() + "\n# my research\n")
    commit_all(project, "research")
    research = {k: v for k, v in snapshot(project).items() if k.startswith(("src/my_research/model", "configs/"))}

    # The next release: an engine change, a template change, its CHANGELOG section, ci/release.
    major, minor = (int(x) for x in version.split(".")[:2])
    new_version = f"{major}.{minor + 1}.0"
    (repo / "engine" / "callbacks.py").write_text((repo / "engine" / "callbacks.py").read_text() + "\n# next\n")
    gitignore = repo / "template" / "project" / ".gitignore"
    gitignore.write_text(gitignore.read_text() + "# added by the next release\n.next-cache/\n")
    upstream_model = repo / "template" / "project" / "src" / "{{package_name}}"
    for path in upstream_model.glob("*model.py*"):
        path.write_text(path.read_text() + "\n# upstream change to research code\n")
    commit_all(repo, "An engine change and a template change")
    changelog = repo / "CHANGELOG.md"
    text = changelog.read_text()
    head, sep, rest = text.partition("\n## ")
    changelog.write_text(f"{head}\n## {new_version}\n\nA test release.\n\nMigration: none.\n{sep}{rest}")
    released = run(repo / "ci" / "release", new_version, cwd=repo)
    assert f"released scaffold {new_version}" in released.stdout
    assert git(repo, "log", "-1", "--format=%s").strip() == f"Release v{new_version}"
    assert read_version(repo) == new_version

    # Wheel B from a fresh clone that has no tags at all: the history alone names the versions.
    fresh = tmp_path / "fresh"
    run("git", "clone", "-q", "--no-tags", repo, fresh, cwd=tmp_path)
    assert git(fresh, "tag").strip() == ""
    install(build_wheel(fresh, tmp_path / "dist-b"), bindir)
    assert run(scaffold, "--version", cwd=work).stdout.strip() == f"scaffold {new_version}"

    check = run(scaffold, "check", "my-research", cwd=work, check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"v{new_version}" in check.stdout and "update available: scaffold update my-research" in check.stdout
    updated = run(scaffold, "update", "my-research", cwd=work, check=False)
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert f"-> v{new_version}" in updated.stdout

    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_commit"] == f"v{new_version}"
    assert hash_tree(project / ENGINE) == hash_tree(fresh / "engine")
    assert ".next-cache/" in (project / ".gitignore").read_text()
    after = snapshot(project)
    assert {k: after[k] for k in research} == research  # research code untouched
    assert "upstream change" not in model.read_text()
    commit_all(project, f"Update scaffold to {new_version}")
    final = run(scaffold, "check", "my-research", cwd=work, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "up to date" in final.stdout


def test_build_refuses_an_unreleased_version(tmp_path: Path) -> None:
    repo = clone_repository(tmp_path / "scaffold")
    version = read_version(repo)
    if not any(str(v) == version for v in releases(repo)):
        run(repo / "ci" / "release", version, cwd=repo)
    check_released(repo, version)  # released: fine
    path = repo / "engine" / "version.py"
    path.write_text(path.read_text().replace(f'"{version}"', '"9.0.0"', 1))
    commit_all(repo, "bump by hand")
    with pytest.raises(UnreleasedError, match=r"scaffold 9\.0\.0 is not released .* run: ci/release 9\.0\.0"):
        check_released(repo, "9.0.0")
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                tmp_path / "dist", ".", cwd=repo, check=False)  # fmt: skip
    assert built.returncode != 0
    assert "ci/release 9.0.0" in built.stdout + built.stderr
    # A version held in history but never released is refused even when a later one is.
    (repo / "CHANGELOG.md").write_text((repo / "CHANGELOG.md").read_text() + "\n## 9.1.0\n\nLater.\n")
    run(repo / "ci" / "release", "9.1.0", cwd=repo)
    with pytest.raises(UnreleasedError, match=r"versions 9\.0\.0 were set .* but never released"):
        check_released(repo, "9.1.0")


def test_release_script_refusals(tmp_path: Path) -> None:
    repo = clone_repository(tmp_path / "scaffold")
    version = read_version(repo)
    if not any(str(v) == version for v in releases(repo)):
        run(repo / "ci" / "release", version, cwd=repo)
    before = git(repo, "rev-parse", "HEAD")
    again = run(repo / "ci" / "release", version, cwd=repo, check=False)
    assert again.returncode == 1 and f"{version} is released already" in again.stderr
    no_notes = run(repo / "ci" / "release", "98.0.0", cwd=repo, check=False)
    assert no_notes.returncode == 1 and "CHANGELOG.md has no '## 98.0.0' section" in no_notes.stderr
    (repo / "engine" / "trainer.py").write_text("# dirty\n")
    dirty = run(repo / "ci" / "release", "98.0.0", cwd=repo, check=False)
    assert dirty.returncode == 1 and "uncommitted changes besides CHANGELOG.md: engine/trainer.py" in dirty.stderr
    assert git(repo, "rev-parse", "HEAD") == before


def test_history_reads_the_version_before_and_after_it_moved_to_version_py(tmp_path: Path) -> None:
    """Releases up to 0.2.0 kept __version__ in engine/__init__.py; later ones in engine/version.py.
    Both kinds of release commits, old project trees and a hand bump of either file count."""
    repo = tmp_path / "repo"
    engine = repo / "engine"
    engine.mkdir(parents=True)
    git(repo, "-c", "init.defaultBranch=main", "init", "-q")
    (engine / "__init__.py").write_text('"""Engine."""\n\n__version__ = "0.1.0"\n')
    commit_all(repo, "Release v0.1.0")
    old_tree = tmp_path / "old"
    (old_tree / "engine").mkdir(parents=True)
    (old_tree / "engine" / "__init__.py").write_text((engine / "__init__.py").read_text())
    (engine / "__init__.py").write_text('"""Engine."""\n\n__version__ = "0.1.1"\n')
    commit_all(repo, "bump by hand, never released")
    (engine / "__init__.py").write_text('"""Engine."""\n\nfrom .version import __version__ as __version__\n')
    (engine / "version.py").write_text('"""Version."""\n\n__version__ = "0.2.0"\n')
    commit_all(repo, "Release v0.2.0")
    (engine / "__init__.py").write_text((engine / "__init__.py").read_text() + "# an edit\n")
    commit_all(repo, "Release v9.9.9")  # the subject lies: version.py still says 0.2.0
    (engine / "version.py").write_text('"""Version."""\n\n__version__ = "0.3.0"\n')
    commit_all(repo, "bump by hand")

    assert read_version(repo) == "0.3.0"
    assert read_version(old_tree) == "0.1.0"  # a project made from an old release
    assert [str(v) for v in releases(repo)] == ["0.1.0", "0.2.0"]
    assert [str(v) for v in recorded_versions(repo)] == ["0.1.0", "0.1.1", "0.2.0", "0.3.0"]
    with pytest.raises(UnreleasedError, match=r"scaffold 0\.3\.0 is not released"):
        check_released(repo, "0.3.0")
    (engine / "version.py").write_text('"""Version."""\n')
    with pytest.raises(RuntimeError, match=r"no __version__ in .*engine/version\.py"):
        read_version(repo)
