"""The template's version history as a small git repository (and a bundle of it).

copier renders from git: a tag per version lets it render the old version a project was made
from and the new one, which is what a three-way update needs. Bundling the whole scaffold
repository would ship tests, CI scripts and everything ever committed, so the build writes a
repository that holds only what the template needs, one commit per released version plus the
tree being built. Commit metadata is fixed, so every build from the same history produces the
same commits and the same ``_commit`` values.

A release is found in the source repository's own commits, so a clone without tags still knows
its versions: the commit ``ci/release`` makes (subject ``Release vX.Y.Z``, with ``__version__``
set to X.Y.Z), or a PEP 440 tag (which wins when both name a version). A wheel build refuses a
history in which its own version, or any version ``__version__`` ever held, is not released:
a project made from such a build could never be updated by a later release.

This module uses the standard library and ``packaging`` only: the wheel build hook loads it
from the source tree before scaffold is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

# What copier needs from a scaffold repository: the root copier.yml points into template/,
# the template's engine folder is a symlink to engine/, and update shows CHANGELOG.md.
TEMPLATE_PATHS = ("copier.yml", "template", "engine", "CHANGELOG.md")
# The template's engine folder is this symlink to engine/ (the engine exists once). An sdist
# drops symlinks, so the history of a tree without it gets it back.
ENGINE_LINK = ("template/project/src/{{package_name}}/engine", "../../../../engine")
_SKIP_NAMES = {"__pycache__", ".DS_Store", ".git"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# Fixed identity and date for synthesized commits: reproducible hashes across builds.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "scaffold",
    "GIT_AUTHOR_EMAIL": "scaffold@localhost",
    "GIT_COMMITTER_NAME": "scaffold",
    "GIT_COMMITTER_EMAIL": "scaffold@localhost",
}
_EPOCH = "2000-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class HistoryInfo:
    """What a built template history renders by default: the package's own version."""

    version: str  # the package version (engine/version.py)
    commit: str  # full hash of the commit holding the tree that was built
    ref: str  # the tag of that commit when it has one, else the hash
    describe: str = ""  # `git describe --tags`: what copier records as the project's _commit

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> HistoryInfo:
        data = json.loads(text)
        return cls(data["version"], data["commit"], data["ref"], data.get("describe", data["ref"]))


def git(*args: str, cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    """Run git quietly; raise with git's own message on failure."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
    )
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {msg}")
    return proc.stdout.decode(errors="replace")


def read_version(root: Path) -> str:
    """The one version of package, template and engine: ``__version__`` in engine/version.py.

    `root` is a scaffold tree or a project's package folder (it holds ``engine/``). Trees from
    before engine/version.py existed (old releases, projects made from them) keep it in
    engine/__init__.py.
    """
    for name in VERSION_FILES:
        path = root / name
        if path.is_file():
            version = _version_in(path.read_text())
            if version is None:
                raise RuntimeError(f"no __version__ in {path}")
            return version
    raise RuntimeError(f"no {VERSION_FILE} in {root}")


def parse_version(tag: str) -> Version | None:
    """A tag's PEP 440 version (``v1.2.0`` and ``1.2.0`` both count), or None."""
    try:
        return Version(tag)
    except InvalidVersion:
        return None


def version_tags(repo: Path) -> list[str]:
    """PEP 440 tags of a repository, oldest version first."""
    tags = [t for t in git("tag", "--list", cwd=repo).split() if parse_version(t) is not None]
    return sorted(tags, key=lambda t: parse_version(t))  # type: ignore[arg-type, return-value]


RELEASE_SUBJECT = re.compile(r"^Release v?(\S+)$")
VERSION_FILE = "engine/version.py"
# Where the version lived up to 0.2.0; older commits, tags and projects still read from it.
LEGACY_VERSION_FILE = "engine/__init__.py"
VERSION_FILES = (VERSION_FILE, LEGACY_VERSION_FILE)


def _version_in(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def _version_at(repo: Path, commit: str) -> str | None:
    """``__version__`` as `commit` recorded it: engine/version.py, or engine/__init__.py before it existed."""
    for name in VERSION_FILES:
        try:
            text = git("show", f"{commit}:{name}", cwd=repo)
        except RuntimeError:
            continue  # not in that commit's tree
        return _version_in(text)
    return None


def releases(repo: Path) -> dict[Version, tuple[str, str]]:
    """Every release of a source repository: version -> (commit, name), oldest first.

    The name is the tag when one exists, else ``v<version>`` (the tag ``ci/release`` would
    have made): the bundled history tags each version with it.
    """
    found: dict[Version, tuple[str, str]] = {}
    log = git("log", "--reverse", "--format=%H%x09%s", "HEAD", "--", cwd=repo) if _has_head(repo) else ""
    for line in log.splitlines():
        commit, _, subject = line.partition("\t")
        match = RELEASE_SUBJECT.match(subject.strip())
        version = parse_version(match.group(1)) if match else None
        if version is None or version in found:
            continue
        recorded = _version_at(repo, commit)
        if recorded is not None and parse_version(recorded) == version:
            found[version] = (commit, f"v{version}")
    for tag in version_tags(repo):
        commit = git("rev-list", "-n", "1", tag, cwd=repo).strip()
        found[parse_version(tag)] = (commit, tag)  # type: ignore[index]
    return dict(sorted(found.items()))


def recorded_versions(repo: Path) -> dict[Version, str]:
    """Every version ``__version__`` held in HEAD's history: version -> the first commit with it."""
    out: dict[Version, str] = {}
    if not _has_head(repo):
        return out
    for commit in git("log", "--reverse", "--format=%H", "HEAD", "--", *VERSION_FILES, cwd=repo).split():
        value = _version_at(repo, commit)
        version = parse_version(value) if value else None
        if version is not None and version not in out:
            out[version] = commit
    return out


class UnreleasedError(RuntimeError):
    """The history has a version no release names: a project made from it could not be updated."""


def check_released(repo: Path, version: str) -> None:
    """Refuse to bundle a history whose version (or any version it held) was never released."""
    if not _is_repo_root(repo):
        return  # an sdist: no history to check, and none to bundle
    released = releases(repo)
    current = Version(version)
    missing = [str(v) for v in recorded_versions(repo) if v not in released and v != current]
    if current not in released:
        raise UnreleasedError(
            f"scaffold {version} is not released in this repository (no commit 'Release v{version}', "
            f"no tag v{version}); run: ci/release {version}"
        )
    if missing:
        raise UnreleasedError(
            f"versions {', '.join(missing)} were set in {VERSION_FILE} but never released, so projects "
            "made from them could not be updated; tag each release commit (git tag vX.Y.Z COMMIT)"
        )


def _has_head(repo: Path) -> bool:
    proc = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=repo, capture_output=True)
    return proc.returncode == 0


def _is_repo_root(path: Path) -> bool:
    if not (path / ".git").exists():
        return False
    try:
        top = git("rev-parse", "--show-toplevel", cwd=path).strip()
    except RuntimeError:
        return False
    return Path(top).resolve() == path.resolve()


def _skip(rel: Path) -> bool:
    return any(p in _SKIP_NAMES for p in rel.parts) or rel.name.endswith(_SKIP_SUFFIXES)


def _working_files(source: Path) -> list[Path]:
    """Template files of the tree being built: what git would track, or a walk without git."""
    if _is_repo_root(source):
        out = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *TEMPLATE_PATHS, cwd=source)
        names = sorted({n for n in out.split("\0") if n})
        return [Path(n) for n in names if os.path.lexists(source / n) and not _skip(Path(n))]
    files: list[Path] = []
    for top in TEMPLATE_PATHS:
        path = source / top
        if path.is_file() or path.is_symlink():
            files.append(Path(top))
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            # A symlinked folder is kept as a link, not walked into.
            linked = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
            dirnames[:] = [d for d in dirnames if d not in _SKIP_NAMES and d not in linked]
            for name in [*filenames, *linked]:
                rel = (Path(dirpath) / name).relative_to(source)
                if not _skip(rel):
                    files.append(rel)
    return sorted(files)


def _clear_worktree(repo: Path) -> None:
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _copy_files(source: Path, files: list[Path], dest: Path) -> None:
    for rel in files:
        src, dst = source / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def _commit(repo: Path, message: str, date: str) -> bool:
    """Commit the whole worktree; False when nothing changed since the last commit."""
    # A fresh index: files were replaced wholesale, possibly with the same size, inode and
    # mtime as before, which git's stat cache would take for unchanged.
    (repo / ".git" / "index").unlink(missing_ok=True)
    git("add", "-A", cwd=repo)
    has_head = (
        subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=repo, capture_output=True).returncode == 0
    )
    if has_head and not git("status", "--porcelain", cwd=repo).strip():
        return False
    env = {**_IDENTITY, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    git("commit", "-q", "--no-verify", "--allow-empty", "-m", message, cwd=repo, env=env)
    return True


def build_history(source: Path, dest: Path, version: str | None = None, *, with_releases: bool = True) -> HistoryInfo:
    """Write a git repository at `dest` holding the template history of `source`.

    One commit per release of `source` (see `releases`; oldest first, tagged with the release's
    name), then the template files of `source`'s working tree when they differ from the last
    release. That last commit is tagged ``v<version>`` unless a release of `version` exists
    already (a development build after a release renders from its hash). `with_releases=False`
    writes the working tree alone (test fixtures).
    """
    source = source.resolve()
    version = version or read_version(source)
    dest.mkdir(parents=True, exist_ok=True)
    git("-c", "init.defaultBranch=main", "init", "-q", cwd=dest)
    if _is_repo_root(source):
        for commit, name in releases(source).values() if with_releases else ():
            present = git("ls-tree", "--name-only", commit, "--", *TEMPLATE_PATHS, cwd=source).split()
            if not present:
                continue
            _clear_worktree(dest)
            archive = subprocess.run(
                ["git", "archive", "--format=tar", commit, "--", *present], cwd=source, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-m", "-f", "-"], cwd=dest, input=archive, check=True)
            date = git("log", "-1", "--format=%cI", commit, cwd=source).strip()
            _commit(dest, f"scaffold {name}", date)
            git("tag", name, cwd=dest)
        date = git("log", "-1", "--format=%cI", "HEAD", cwd=source).strip() if _has_head(source) else _EPOCH
    else:
        date = os.environ.get("SOURCE_DATE_EPOCH", "")
        date = f"@{date} +0000" if date else _EPOCH
    _clear_worktree(dest)
    _copy_files(source, _working_files(source), dest)
    link, target = ENGINE_LINK
    if (dest / "template" / "project").is_dir() and not os.path.lexists(dest / link):
        (dest / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest / link)
    _commit(dest, f"scaffold {version}", date)
    head = git("rev-parse", "HEAD", cwd=dest).strip()
    target = Version(version)
    tags = version_tags(dest)
    if not any(parse_version(t) == target for t in tags):
        git("tag", f"v{version}", cwd=dest)
    at_head = git("tag", "--points-at", "HEAD", cwd=dest).split()
    ref = next((t for t in at_head if parse_version(t) == target), at_head[0] if at_head else head)
    describe = git("describe", "--tags", "--always", cwd=dest).strip()
    return HistoryInfo(version=version, commit=head, ref=ref, describe=describe)


def write_bundle(repo: Path, bundle: Path) -> None:
    """A single-file copy of `repo` (all branches and tags) that git and copier clone from."""
    bundle.parent.mkdir(parents=True, exist_ok=True)
    git("bundle", "create", "-q", str(bundle.resolve()), "--all", cwd=repo)
