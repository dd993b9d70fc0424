"""`scaffold update`: move a project to a newer template version without losing work.

The plan is computed from two renders in temporary folders, so nothing in the project is
touched until it is applied (and never with --dry-run):

- base: the template at the project's recorded version (``_commit``) with its recorded answers;
- target: the template at the requested version with the same answers (plus defaults or
  ``--data`` for questions the new version adds).

Then, per file:

- the engine folder is replaced wholesale by the target's (unless the manifest shows local
  edits: refused, or with --force saved as a patch first);
- research code (the template's ``_skip_if_exists``) is never created, changed or deleted;
- every other template file is merged three-way (base, project, target) with
  ``git merge-file``; conflicts are written with markers and reported, and exit non-zero.

Before writing, HEAD is tagged ``scaffold-backup-<from>-<time>``: ``git reset --hard <tag>``
undoes the update.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from packaging.version import Version

from .create import ANSWERS_FILE, Rendered, read_answers, render
from .errors import BadInput, ScaffoldError
from .history import git, read_version
from .manifest import (
    MANIFEST_NAME,
    EngineEdits,
    Manifest,
    engine_edits,
    hash_tree,
    read_manifest,
    write_manifest,
)
from .source import TemplateSource, commit_version, latest, list_versions, project_source, release_of, resolve_ref

BACKUP_PREFIX = "scaffold-backup"
PATCH_DIR = ".scaffold-backups"
_SKIP_PARTS = {".git", "__pycache__"}


@dataclass
class FileChange:
    """One shared (non-engine, non-research) file and what the update does to it."""

    path: str
    action: str  # add | update | merge | delete | conflict | kept-deleted
    content: bytes | None = None  # what to write (None: delete, or leave as is)
    mode: int | None = None
    note: str = ""
    markers: bool = False  # a text conflict: the merged content carries conflict markers


@dataclass
class Plan:
    project: Path
    package: str
    source: str
    from_commit: str
    to_commit: str
    from_version: Version | None
    to_version: Version | None
    up_to_date: bool = False
    engine_dir: str = ""
    engine_added: list[str] = field(default_factory=list)
    engine_changed: list[str] = field(default_factory=list)
    engine_removed: list[str] = field(default_factory=list)
    engine_edits: EngineEdits = field(default_factory=EngineEdits)
    changes: list[FileChange] = field(default_factory=list)
    research_changed: list[str] = field(default_factory=list)  # upstream changes left to the researcher
    new_answers: dict[str, Any] = field(default_factory=dict)  # questions the target adds
    notes: list[tuple[str, str]] = field(default_factory=list)  # (version, changelog section)
    # Contents for applying the plan (temporary folders are gone by then).
    new_engine: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    old_engine: dict[str, bytes] = field(default_factory=dict)
    answers_text: bytes = b""
    new_engine_version: str = ""
    base_note: str = ""
    stale_manifest: str = ""  # the manifest's version when it lags behind _commit (plain `copier update`)
    recorded_hashes: dict[str, str] = field(default_factory=dict)  # the manifest's: the engine as scaffold wrote it
    dependencies_changed: bool = False  # the template's pyproject.toml requires other packages: reinstall

    @property
    def conflicts(self) -> list[FileChange]:
        return [c for c in self.changes if c.action == "conflict"]


@dataclass
class UpdateResult:
    plan: Plan
    backup: str = ""
    patch: str = ""


REINSTALL = "python -m pip install -e '.[dev]'"  # what the generated README installs with


# -- reading the project -------------------------------------------------------------------
def _project_root(path: Path) -> Path:
    project = path.expanduser().resolve()
    if not (project / ANSWERS_FILE).is_file():
        raise ScaffoldError(f"{project} has no {ANSWERS_FILE}: run scaffold update in a project made by scaffold new")
    try:
        top = Path(git("rev-parse", "--show-toplevel", cwd=project).strip()).resolve()
    except RuntimeError:
        raise ScaffoldError(
            f"{project} is not a git repository; updates need git (git init && git add -A && git commit)"
        ) from None
    if top != project:
        raise ScaffoldError(f"{project} must be the root of its git repository (it is inside {top})")
    return project


def _dirty(project: Path) -> list[str]:
    return [line for line in git("status", "--porcelain", cwd=project).splitlines() if line.strip()]


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if (path.is_file() or path.is_symlink()) and not (_SKIP_PARTS & set(rel.parts)):
            out[rel.as_posix()] = path
    return out


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None and path.is_file() else None


def _is_binary(*blobs: bytes | None) -> bool:
    return any(b is not None and b"\0" in b for b in blobs)


# -- merging -----------------------------------------------------------------------------
def merge3(ours: bytes, base: bytes, theirs: bytes, labels: tuple[str, str, str]) -> tuple[bytes, bool]:
    """git merge-file: (merged bytes, True when it left conflict markers)."""
    with tempfile.TemporaryDirectory(prefix="scaffold-merge-") as tmp:
        paths = []
        for name, blob in (("ours", ours), ("base", base), ("theirs", theirs)):
            p = Path(tmp) / name
            p.write_bytes(blob)
            paths.append(str(p))
        proc = subprocess.run(
            ["git", "merge-file", "-p", "-L", labels[0], "-L", labels[1], "-L", labels[2], *paths],
            capture_output=True,
        )
    if proc.returncode < 0 or proc.returncode > 127:
        raise ScaffoldError(f"git merge-file failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout, proc.returncode > 0


def _plan_file(
    rel: str, base: bytes | None, ours: bytes | None, theirs: bytes | None, labels: tuple[str, str, str]
) -> FileChange | None:
    if base == theirs:
        return None  # the template did not change it: the project's version stands
    if theirs is None:  # removed by the template
        if ours is None:
            return None
        if ours == base:
            return FileChange(rel, "delete")
        return FileChange(rel, "conflict", note="removed by the new version, but you changed it: keep it or git rm it")
    if ours is None:
        if base is None:
            return FileChange(rel, "add", theirs)
        return FileChange(rel, "kept-deleted", note="you deleted it; the new version changes it (not restored)")
    if ours == theirs:
        return None
    if ours == base:
        return FileChange(rel, "update", theirs)
    if _is_binary(base, ours, theirs):
        return FileChange(rel, "conflict", note="binary file changed on both sides; left as yours")
    merged, conflicted = merge3(ours, base or b"", theirs, labels)
    if conflicted:
        return FileChange(rel, "conflict", merged, markers=True)
    return FileChange(rel, "merge", merged)


def _changelog_notes(changelog: str, after: Version | None, upto: Version | None) -> list[tuple[str, str]]:
    """The CHANGELOG sections (``## X.Y.Z``) for versions in (after, upto]."""
    notes = []
    parts = re.split(r"^## +", changelog, flags=re.MULTILINE)
    for part in parts[1:]:
        head, _, body = part.partition("\n")
        match = re.match(r"v?(\S+)", head.strip())
        try:
            v = Version(match.group(1)) if match else None
        except ValueError:
            v = None
        if v is None:
            continue
        if (after is None or v > after) and (upto is None or v <= upto):
            notes.append((head.strip(), body.strip()))
    return sorted(notes, key=lambda n: Version(re.match(r"v?(\S+)", n[0]).group(1)))  # type: ignore[union-attr]


def _render_base(source: TemplateSource, dest: Path, commit: str, answers: dict[str, Any]) -> tuple[Rendered, str]:
    """Render the project's recorded version (the merge base); a development build's commit
    missing from `source` falls back to its release tag. Returns the render and the ref used."""
    try:
        return render(source, dest, {}, answers=answers, vcs_ref=commit), commit
    except BadInput:
        release = release_of(commit)
        fallback = next((tag for v, tag in list_versions(source) if v == release), None)
        if fallback is None or fallback == commit:
            raise ScaffoldError(
                f"{source.label} does not have the project's template version {commit}, which a three-way "
                "merge needs; pass --template with a scaffold repository that has it"
            ) from None
        shutil.rmtree(dest, ignore_errors=True)
        return render(source, dest, {}, answers=answers, vcs_ref=fallback), fallback


# -- planning ----------------------------------------------------------------------------
def plan_update(
    path: Path, *, to: str | None = None, template: str | None = None, data: dict[str, Any] | None = None
) -> Plan:
    """Everything an update would do, computed in temporary folders."""
    project = _project_root(path)
    answers = read_answers(project)
    manifest = read_manifest(project)
    package = str(answers.get("package_name", ""))
    from_commit = str(answers.get("_commit") or "")
    if not from_commit:
        raise ScaffoldError(f"{ANSWERS_FILE} records no template version (_commit); cannot update")
    data = dict(data or {})
    if "package_name" in data and data["package_name"] != package:
        raise BadInput("package_name cannot change in an update (it names src/<package>/); rename by hand")
    old_answers = {k: v for k, v in answers.items() if not k.startswith("_")}
    source = project_source(answers.get("_src_path"), template)
    target_ref = resolve_ref(source, to)
    if target_ref is None:
        target_ref = latest(source)[0] or "HEAD"

    with tempfile.TemporaryDirectory(prefix="scaffold-update-") as tmp:
        new_dir, old_dir = Path(tmp) / "new", Path(tmp) / "old"
        try:
            target = render(source, new_dir, data, answers=old_answers, vcs_ref=target_ref)
        except BadInput as exc:
            if "has no version" in exc.message:
                raise BadInput(f"{source.label} has no version {to or target_ref!r} (see its tags: git tag)") from None
            raise
        to_commit = str(target.answers.get("_commit") or target_ref)
        from_version, to_version = commit_version(from_commit), commit_version(to_commit)
        plan = Plan(project, package, source.label, from_commit, to_commit, from_version, to_version)
        plan.engine_dir, plan.recorded_hashes = manifest.engine_dir, dict(manifest.files)
        plan.engine_edits = engine_edits(project, manifest)
        if manifest.template_commit != from_commit:
            plan.stale_manifest = manifest.template_commit
        if from_version is not None and to_version is not None and to_version < from_version:
            raise ScaffoldError(
                f"refusing to downgrade from {from_commit} to {to_commit}; scaffold only updates forward "
                f"(to undo an update, reset to its backup tag: git tag --list '{BACKUP_PREFIX}*')"
            )
        if to_commit == from_commit and not data:
            plan.up_to_date = True
            if plan.stale_manifest:  # the engine should be the target's: compare with it, then record it
                plan.engine_edits = _edits_against(project / manifest.engine_dir, new_dir / manifest.engine_dir)
                plan.new_engine = _engine_blobs(new_dir / manifest.engine_dir)
                plan.new_engine_version = read_version(new_dir / "src" / package)
            return plan
        base, base_ref = _render_base(source, old_dir, from_commit, old_answers)
        if plan.stale_manifest:  # edits are differences from what the recorded version vendored
            plan.engine_edits = _edits_against(project / manifest.engine_dir, old_dir / manifest.engine_dir)
        if base_ref != from_commit:
            plan.base_note = f"{from_commit} is not in {source.label}; merging against {base_ref} instead"

        plan.new_answers = {k: v for k, v in target.answers.items() if not k.startswith("_") and k not in old_answers}
        plan.notes = _changelog_notes(target.changelog, release_of(from_commit), to_version)
        plan.answers_text = (new_dir / ANSWERS_FILE).read_bytes()
        engine = manifest.engine_dir
        plan.new_engine_version = read_version(new_dir / "src" / package)

        # The engine: wholesale.
        new_files, old_files = _files(new_dir), _files(old_dir)
        new_engine = {k[len(engine) + 1 :]: p for k, p in new_files.items() if k.startswith(engine + "/")}
        cur_engine = _files(project / engine) if (project / engine).is_dir() else {}
        plan.new_engine = {k: (p.read_bytes(), p.stat().st_mode & 0o777) for k, p in new_engine.items()}
        plan.old_engine = {
            k[len(engine) + 1 :]: p.read_bytes() for k, p in old_files.items() if k.startswith(engine + "/")
        }
        plan.engine_added = sorted(new_engine.keys() - cur_engine.keys())
        plan.engine_removed = sorted(cur_engine.keys() - new_engine.keys())
        plan.engine_changed = sorted(
            k for k in new_engine.keys() & cur_engine.keys() if plan.new_engine[k][0] != cur_engine[k].read_bytes()
        )

        # Everything else the template renders.
        import pathspec

        research = pathspec.GitIgnoreSpec.from_lines(base.research + target.research)
        labels = ("yours", f"scaffold {from_commit}", f"scaffold {to_commit}")
        owned = {ANSWERS_FILE, MANIFEST_NAME}
        for rel in sorted((new_files.keys() | old_files.keys()) - owned):
            if rel.startswith(engine + "/"):
                continue
            b, t = _read(old_files.get(rel)), _read(new_files.get(rel))
            if rel == "pyproject.toml" and _requirements(b) != _requirements(t):
                plan.dependencies_changed = True
            if research.match_file(rel):
                if b != t:
                    plan.research_changed.append(rel)
                continue
            change = _plan_file(rel, b, _read(project / rel), t, labels)
            if change is not None:
                if rel in new_files:
                    change.mode = new_files[rel].stat().st_mode & 0o777
                plan.changes.append(change)
    return plan


def _requirements(pyproject: bytes | None) -> Any:
    """What installing the project pulls in: Python version, dependencies and extras."""
    import tomllib

    try:
        project = tomllib.loads((pyproject or b"").decode()).get("project", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    return project.get("requires-python"), project.get("dependencies"), project.get("optional-dependencies")


def _engine_blobs(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {k: (p.read_bytes(), p.stat().st_mode & 0o777) for k, p in _files(folder).items() if "__pycache__" not in k}


def _edits_against(current: Path, reference: Path) -> EngineEdits:
    have, want = hash_tree(current), hash_tree(reference)
    return EngineEdits(
        changed=sorted(p for p in have.keys() & want.keys() if have[p] != want[p]),
        added=sorted(have.keys() - want.keys()),
        removed=sorted(want.keys() - have.keys()),
    )


def expected_engine(project: Path, answers: dict[str, Any], manifest: Manifest, source: TemplateSource) -> EngineEdits:
    """Local engine edits against what the recorded version (``_commit``) vendored: for a manifest
    that lags behind it, because the project was updated with plain `copier update`."""
    commit = str(answers.get("_commit") or "")
    old_answers = {k: v for k, v in answers.items() if not k.startswith("_")}
    with tempfile.TemporaryDirectory(prefix="scaffold-check-") as tmp:
        _render_base(source, Path(tmp) / "p", commit, old_answers)
        return _edits_against(project / manifest.engine_dir, Path(tmp) / "p" / manifest.engine_dir)


# -- applying ----------------------------------------------------------------------------
def _backup(project: Path, plan: Plan) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{BACKUP_PREFIX}-{plan.from_commit}-{stamp}"
    name = re.sub(r"[^A-Za-z0-9._/-]", "_", name)
    git("tag", name, cwd=project)
    return name


def _recorded_engine(project: Path, engine_dir: str, hashes: dict[str, str]) -> dict[str, bytes] | None:
    """The engine exactly as scaffold wrote it (every file matching the manifest's SHA-256), read
    from the project's own commits; None when no commit holds it.

    The template source may lack the recorded version (a project made by an unreleased build,
    updated by a release), and a render of the nearest release instead would give a patch whose
    preimages the project's repository has never seen: `git apply --3way` could not use it.
    """
    try:
        commits = git("rev-list", "-n", "50", "HEAD", "--", engine_dir, MANIFEST_NAME, cwd=project).split()
    except RuntimeError:
        return None
    for commit in commits:
        listing = git("ls-tree", "-r", "-z", commit, "--", engine_dir + "/", cwd=project)
        blobs: dict[str, str] = {}
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            rel = path[len(engine_dir) + 1 :]
            if "__pycache__" not in rel and not rel.endswith((".pyc", ".pyo")):
                blobs[rel] = meta.split()[2]
        if set(blobs) != set(hashes):
            continue
        batch = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=project,
            input="".join(f"{b}\n" for b in blobs.values()).encode(),
            capture_output=True,
            check=True,
        ).stdout
        contents, pos = {}, 0
        for rel in blobs:  # "<sha> blob <size>\n<bytes>\n" per object, in the order asked
            header_end = batch.index(b"\n", pos)
            size = int(batch[pos:header_end].split()[2])
            contents[rel] = batch[header_end + 1 : header_end + 1 + size]
            pos = header_end + 1 + size + 1
        if all(hashlib.sha256(blob).hexdigest() == hashes[rel] for rel, blob in contents.items()):
            return contents
    return None


def _engine_patch(project: Path, plan: Plan, backup: str) -> str:
    """The local engine edits as a patch that `git apply --3way` reapplies (paths from the project
    root), against the engine the project recorded: its preimages are blobs of the project's own."""
    recorded = None if plan.stale_manifest else _recorded_engine(project, plan.engine_dir, plan.recorded_hashes)
    with tempfile.TemporaryDirectory(prefix="scaffold-patch-") as tmp:
        old, new = Path(tmp) / "old" / plan.engine_dir, Path(tmp) / "new" / plan.engine_dir
        for rel, blob in (recorded if recorded is not None else plan.old_engine).items():
            (old / rel).parent.mkdir(parents=True, exist_ok=True)
            (old / rel).write_bytes(blob)
        current = project / plan.engine_dir
        if current.is_dir():
            shutil.copytree(current, new, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        new.mkdir(parents=True, exist_ok=True)
        old.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            ["git", "diff", "--no-index", "--binary", "--no-prefix", "old", "new"],
            cwd=tmp,
            capture_output=True,
        )
    patch = project / PATCH_DIR / f"{backup}.engine.patch"
    patch.parent.mkdir(exist_ok=True)
    # Backups stay out of the project's commits (`git add -A` after the update).
    (patch.parent / ".gitignore").write_text("# scaffold update's backups of local engine edits\n*\n")
    patch.write_bytes(proc.stdout)
    return patch.relative_to(project).as_posix()


def apply_plan(plan: Plan, *, force: bool = False) -> UpdateResult:
    project = plan.project
    result = UpdateResult(plan)
    if plan.up_to_date:
        if plan.stale_manifest:  # record the engine the project's version vendors; edits stay visible
            version = plan.new_engine_version
            write_manifest(project, Manifest(version, plan.to_commit, plan.engine_dir, _hash(plan.new_engine)))
        return result
    if plan.engine_edits and not force:
        raise ScaffoldError(
            f"the vendored engine ({plan.engine_dir}) has local edits; an update would overwrite them. "
            "Move them into your own code (a subclass or a callback), or rerun with --force to replace "
            "the engine and keep the edits as a patch",
            plan.engine_edits.lines(),
        )
    result.backup = _backup(project, plan)
    if plan.engine_edits:
        result.patch = _engine_patch(project, plan, result.backup)

    engine = project / plan.engine_dir
    if engine.exists():
        shutil.rmtree(engine)
    for rel, (blob, mode) in plan.new_engine.items():
        target = engine / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        target.chmod(mode)

    for change in plan.changes:
        target = project / change.path
        if change.action == "delete":
            target.unlink(missing_ok=True)
            parent = target.parent
            while parent != project and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        elif change.content is not None and change.action in ("add", "update", "merge", "conflict"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(change.content)
            if change.mode is not None and change.action in ("add", "update"):
                target.chmod(change.mode)

    (project / ANSWERS_FILE).write_bytes(plan.answers_text)
    answers = read_answers(project)
    write_manifest(
        project,
        Manifest(
            plan.new_engine_version,
            str(answers.get("_commit", plan.to_commit)),
            plan.engine_dir,
            _hash(plan.new_engine),
        ),
    )
    return result


def _hash(files: dict[str, tuple[bytes, int]]) -> dict[str, str]:
    return {rel: hashlib.sha256(blob).hexdigest() for rel, (blob, _) in sorted(files.items())}


def run_update(
    path: Path,
    *,
    to: str | None = None,
    template: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    data: dict[str, Any] | None = None,
) -> UpdateResult:
    """Plan and (unless `dry_run`) apply an update; refuses a dirty git tree."""
    project = _project_root(path)
    dirty = _dirty(project)
    if dirty and not dry_run:
        raise ScaffoldError(
            "the project has uncommitted changes; commit them first (git add -A && git commit -m 'wip'), "
            "or stash them (git stash -u), then rerun scaffold update",
            dirty[:20],
        )
    plan = plan_update(project, to=to, template=template, data=data)
    if dry_run:
        return UpdateResult(plan)
    return apply_plan(plan, force=force)


# -- reporting ---------------------------------------------------------------------------
def _echo(line: str = "") -> None:
    typer.echo(line)


def _section(title: str, items: list[str]) -> None:
    if items:
        _echo(f"{title}:")
        for item in items:
            _echo(f"  {item}")


def _conflict_note(change: FileChange, dry_run: bool) -> str:
    if change.markers:
        return "would write conflict markers" if dry_run else "conflict markers written"
    return change.note


def _describe(plan: Plan, dry_run: bool = False) -> None:
    _echo(f"scaffold update: {plan.from_commit} -> {plan.to_commit} (from {plan.source})")
    if plan.base_note:
        _echo(f"note: {plan.base_note}")
    engine = (
        [f"{'add':<10}{p}" for p in plan.engine_added]
        + [f"{'change':<10}{p}" for p in plan.engine_changed]
        + [f"{'remove':<10}{p}" for p in plan.engine_removed]
    )
    _section(f"engine {plan.engine_dir}/ (replaced wholesale)", engine or ["no file changes"])
    verbs = {"add": "add", "update": "change", "merge": "merge", "delete": "remove", "kept-deleted": "skip"}
    _section(
        "template files",
        [
            f"{verbs.get(c.action, c.action):<10}{c.path}"
            + (f"  ({note})" if (note := _conflict_note(c, dry_run)) else "")
            for c in plan.changes
        ],
    )
    _section("research code changed upstream (left as is; compare with a fresh scaffold new)", plan.research_changed)
    _section("new questions (answers recorded)", [f"{k} = {v!r}" for k, v in plan.new_answers.items()])
    if plan.dependencies_changed:
        verb = "would change" if dry_run else "changed"
        _echo(f"pyproject.toml: the dependencies {verb}; after the update reinstall: {REINSTALL}")
    if plan.notes:
        _echo("migration notes:")
        for head, body in plan.notes:
            _echo(f"  ## {head}")
            for line in body.splitlines():
                _echo(f"  {line}".rstrip())
            _echo()


def _up_to_date(plan: Plan, dry_run: bool) -> None:
    if not plan.stale_manifest:
        _echo(f"already up to date at {plan.to_commit}; nothing to do")
        return
    verb = "would record" if dry_run else "recorded"
    _echo(
        f"already at {plan.to_commit}, but {MANIFEST_NAME} was written for {plan.stale_manifest} "
        f"(the project was updated without scaffold, e.g. plain copier update); {verb} the engine of {plan.to_commit}"
    )
    if plan.engine_edits:
        _section("engine has local edits", plan.engine_edits.lines())
    if not dry_run:
        _echo(f"  commit it: git add {MANIFEST_NAME} && git commit -m 'Record the engine of {plan.to_commit}'")


def print_plan(plan: Plan) -> None:
    if plan.up_to_date:
        _up_to_date(plan, dry_run=True)
        return
    _describe(plan, dry_run=True)
    if plan.engine_edits:
        _section(
            "engine has local edits (an update refuses unless --force, which saves them as a patch)",
            plan.engine_edits.lines(),
        )
    if plan.conflicts:
        _echo(
            f"expected conflicts: {len(plan.conflicts)} ({', '.join(c.path for c in plan.conflicts)}): "
            "an update would write conflict markers for you to resolve"
        )
    _echo("dry run: nothing was changed")


def print_result(result: UpdateResult) -> int:
    """Report an applied update; the exit code (1 when conflicts remain)."""
    plan = result.plan
    if plan.up_to_date:
        _up_to_date(plan, dry_run=False)
        return 0
    _describe(plan)
    _echo(f"backup: git tag {result.backup} (undo: git reset --hard {result.backup} && git clean -fd)")
    if result.patch:
        _echo(
            f"your engine edits were saved to {result.patch} (git ignores it); after committing the update, "
            f"reapply them with: git apply --3way {result.patch}"
        )
    if plan.conflicts:
        typer.echo(f"error: {len(plan.conflicts)} file(s) need a manual merge:", err=True)
        for c in plan.conflicts:
            typer.echo(f"  {c.path}: {c.note}", err=True)
        typer.echo(
            "resolve the <<<<<<< yours / >>>>>>> scaffold markers, run your tests, then commit: "
            f"git add -A && git commit -m 'Update scaffold to {plan.to_commit}'",
            err=True,
        )
        return 1
    _echo(f"updated to {plan.to_commit}. Review (git diff), run your tests, then commit:")
    _echo(f"  git add -A && git commit -m 'Update scaffold to {plan.to_commit}'")
    if plan.dependencies_changed:
        _echo(f"the project's dependencies changed: reinstall it before running anything: {REINSTALL}")
    return 0


__all__ = ["Plan", "UpdateResult", "apply_plan", "merge3", "plan_update", "print_plan", "print_result", "run_update"]
