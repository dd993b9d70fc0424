"""`scaffold check`: is the project's engine current and unmodified, and is its last update finished?"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from .create import ANSWERS_FILE, read_answers
from .errors import ScaffoldError
from .manifest import MANIFEST_NAME, EngineEdits, engine_edits, read_manifest
from .source import commit_version, latest, project_source

# The labels `scaffold update` writes around a conflict (see update.py's merge labels).
_MARKERS = r"^(<<<<<<< yours|>>>>>>> scaffold )"


@dataclass
class Status:
    project: Path
    commit: str  # the template version the project records (copier's _commit)
    version: str  # the engine version in the manifest
    latest: str | None  # the newest version the source offers
    source: str
    update_available: bool
    edits: EngineEdits = field(default_factory=EngineEdits)
    newer: bool = False  # the project is at a newer release than the source offers
    conflicts: list[str] = field(default_factory=list)  # files with unresolved conflict markers
    uncommitted: list[str] = field(default_factory=list)  # scaffold's records changed but not committed
    stale_manifest: str = ""  # the manifest's version when plain `copier update` moved _commit on
    update_command: str = "scaffold update"  # complete, as it runs from the current folder

    @property
    def exit_code(self) -> int:
        return 1 if self.update_available or self.edits or self.newer or self.conflicts or self.uncommitted else 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "project": str(self.project),
                "commit": self.commit,
                "version": self.version,
                "latest": self.latest,
                "source": self.source,
                "update_available": self.update_available,
                "update_command": self.update_command if self.update_available else None,
                "newer_than_source": self.newer,
                "engine_modified": bool(self.edits),
                "engine_edits": {
                    "modified": self.edits.changed,
                    "added": self.edits.added,
                    "deleted": self.edits.removed,
                },
                "conflicts": self.conflicts,
                "uncommitted_update": self.uncommitted,
                "stale_manifest": self.stale_manifest or None,
                "up_to_date": self.exit_code == 0,
            },
            indent=2,
        )


def _git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True)


def _conflicted(project: Path) -> list[str]:
    """Files (tracked or new) that still hold the conflict markers an update wrote."""
    proc = _git(project, "grep", "-l", "-I", "--untracked", "-E", _MARKERS)
    return sorted(proc.stdout.split()) if proc.returncode == 0 else []


def _uncommitted(project: Path) -> list[str]:
    proc = _git(project, "status", "--porcelain", "--", ANSWERS_FILE, MANIFEST_NAME)
    return sorted(line[3:] for line in proc.stdout.splitlines() if line.strip()) if proc.returncode == 0 else []


def _update_command(project: Path, option: str) -> str:
    """`scaffold update` with what it needs to run as printed from the current folder."""
    words = ["scaffold", "update"]
    cwd = Path.cwd().resolve()
    if project != cwd:
        words.append(shlex.quote(os.path.relpath(project, cwd) if project.is_relative_to(cwd) else str(project)))
    return " ".join(words + ([option] if option else []))


def check_project(path: Path, template: str | None = None) -> Status:
    project = path.expanduser().resolve()
    if not (project / ANSWERS_FILE).is_file():
        raise ScaffoldError(f"{project} has no {ANSWERS_FILE}: run scaffold check in a project made by scaffold new")
    answers = read_answers(project)
    manifest = read_manifest(project)
    commit = str(answers.get("_commit") or manifest.template_commit)
    source = project_source(answers.get("_src_path"), template)
    latest_ref, latest_version = latest(source)
    current = commit_version(commit)
    newer = (
        latest_version is not None
        and current is not None
        and Version(current.base_version) > Version(latest_version.base_version)
    )
    available = latest_version is not None and current is not None and latest_version > current and not newer
    stale = manifest.template_commit if manifest.template_commit != commit else ""
    if stale:
        from .update import expected_engine

        edits = expected_engine(project, answers, manifest, source)
    else:
        edits = engine_edits(project, manifest)
    return Status(
        project,
        commit,
        manifest.version,
        latest_ref,
        source.label,
        available,
        edits,
        newer=newer,
        conflicts=_conflicted(project),
        uncommitted=_uncommitted(project),
        stale_manifest=stale,
        update_command=_update_command(project, source.option),
    )


def format_status(status: Status) -> str:
    lines = [
        f"project: {status.project}",
        f"template version: {status.commit} (engine {status.version})",
        f"latest available: {status.latest or 'unknown'} (from {status.source})",
    ]
    if status.edits:
        lines.append("engine: edited locally (scaffold update will refuse without --force):")
        lines += [f"  {line}" for line in status.edits.lines()]
    else:
        lines.append("engine: unmodified")
    if status.stale_manifest:
        lines.append(
            f"note: {MANIFEST_NAME} was written for {status.stale_manifest}; the project was updated to "
            f"{status.commit} without scaffold (e.g. plain copier update), so the engine was compared with "
            f"{status.commit}'s. Record it: {status.update_command}"
        )
    if status.conflicts:
        lines.append("unresolved conflict markers (<<<<<<< yours ... >>>>>>> scaffold) in:")
        lines += [f"  {name}" for name in status.conflicts]
        lines.append("  resolve them, run your tests, then commit (git add -A && git commit)")
    if status.uncommitted:
        lines.append(
            f"the last update is not committed ({', '.join(status.uncommitted)} changed): review it, then "
            f"git add -A && git commit -m 'Update scaffold to {status.commit}'"
        )
    if status.newer:
        lines.append(
            f"the project ({status.commit}) is newer than {status.source} offers ({status.latest}): "
            "install a newer scaffold (or pass --template with a newer scaffold repository)"
        )
    elif status.update_available:
        preview = status.update_command.replace("scaffold update", "scaffold update --dry-run", 1)
        lines.append(f"update available: {status.update_command} (preview: {preview}) -> {status.latest}")
    elif status.exit_code == 0:
        lines.append("up to date")
    return "\n".join(lines)
