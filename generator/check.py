"""`scaffold check`: is the project's engine current and unmodified?"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .create import ANSWERS_FILE, read_answers
from .errors import ScaffoldError
from .manifest import EngineEdits, engine_edits, read_manifest
from .source import commit_version, latest, template_source


@dataclass
class Status:
    project: Path
    commit: str  # the template version the project records (copier's _commit)
    version: str  # the engine version in the manifest
    latest: str | None  # the newest version the source offers
    source: str
    update_available: bool
    edits: EngineEdits = field(default_factory=EngineEdits)

    @property
    def exit_code(self) -> int:
        return 1 if self.update_available or self.edits else 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "project": str(self.project),
                "commit": self.commit,
                "version": self.version,
                "latest": self.latest,
                "source": self.source,
                "update_available": self.update_available,
                "engine_modified": bool(self.edits),
                "engine_edits": {
                    "modified": self.edits.changed,
                    "added": self.edits.added,
                    "deleted": self.edits.removed,
                },
                "up_to_date": self.exit_code == 0,
            },
            indent=2,
        )


def check_project(path: Path, template: str | None = None) -> Status:
    project = path.expanduser().resolve()
    if not (project / ANSWERS_FILE).is_file():
        raise ScaffoldError(f"{project} has no {ANSWERS_FILE}: run scaffold check in a project made by scaffold new")
    answers = read_answers(project)
    manifest = read_manifest(project)
    commit = str(answers.get("_commit") or manifest.template_commit)
    source = template_source(template)
    latest_ref, latest_version = latest(source)
    current = commit_version(commit)
    available = latest_version is not None and current is not None and latest_version > current
    return Status(
        project, commit, manifest.version, latest_ref, source.label, available, engine_edits(project, manifest)
    )


def format_status(status: Status) -> str:
    lines = [
        f"project: {status.project}",
        f"template version: {status.commit} (engine {status.version})",
        f"latest available: {status.latest or 'unknown'} ({status.source})",
    ]
    if status.edits:
        lines.append("engine: edited locally (scaffold update will refuse without --force):")
        lines += [f"  {line}" for line in status.edits.lines()]
    else:
        lines.append("engine: unmodified")
    if status.update_available:
        lines.append(f"update available: scaffold update (preview: scaffold update --dry-run) -> {status.latest}")
    elif not status.edits:
        lines.append("up to date")
    return "\n".join(lines)
