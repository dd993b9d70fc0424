"""The hash manifest of a project's vendored engine: how `check` and `update` see local edits.

It lives at the project root in ``.scaffold-manifest.json`` beside copier's answers file:

    {"version": "0.1.0", "template_commit": "v0.1.0", "engine_dir": "src/my_research/engine",
     "files": {"__init__.py": "<sha256>", ...}}

``files`` maps each engine file (a POSIX path relative to ``engine_dir``) to the SHA-256 of its
bytes as scaffold wrote it. Caches (``__pycache__``, ``*.pyc``) are not part of the engine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ScaffoldError

MANIFEST_NAME = ".scaffold-manifest.json"


def engine_relpath(package_name: str) -> str:
    return f"src/{package_name}/engine"


def _ignored(rel: Path) -> bool:
    return "__pycache__" in rel.parts or rel.suffix in (".pyc", ".pyo")


def hash_tree(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, keyed by POSIX relative path (sorted)."""
    if not folder.is_dir():
        return {}
    hashes = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not _ignored(rel):
            hashes[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@dataclass
class Manifest:
    version: str
    template_commit: str
    engine_dir: str
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "version": self.version,
            "template_commit": self.template_commit,
            "engine_dir": self.engine_dir,
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(data, indent=2) + "\n"


@dataclass
class EngineEdits:
    """Differences between the engine folder on disk and its manifest."""

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def lines(self) -> list[str]:
        return (
            [f"modified: {p}" for p in self.changed]
            + [f"added:    {p}" for p in self.added]
            + [f"deleted:  {p}" for p in self.removed]
        )


def make_manifest(project: Path, package_name: str, version: str, template_commit: str) -> Manifest:
    rel = engine_relpath(package_name)
    return Manifest(version, template_commit, rel, hash_tree(project / rel))


def write_manifest(project: Path, manifest: Manifest) -> None:
    (project / MANIFEST_NAME).write_text(manifest.to_json())


def read_manifest(project: Path) -> Manifest:
    path = project / MANIFEST_NAME
    if not path.is_file():
        raise ScaffoldError(
            f"{path} is missing: this project was not made by scaffold, or the manifest was deleted "
            "(restore it from git: git checkout -- " + MANIFEST_NAME + ")"
        )
    try:
        data = json.loads(path.read_text())
        return Manifest(data["version"], data["template_commit"], data["engine_dir"], dict(data["files"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ScaffoldError(f"{path} is not a valid scaffold manifest ({exc}); restore it from git") from exc


def engine_edits(project: Path, manifest: Manifest) -> EngineEdits:
    """What changed in the engine folder since scaffold wrote it."""
    current = hash_tree(project / manifest.engine_dir)
    expected = manifest.files
    return EngineEdits(
        changed=sorted(p for p in current.keys() & expected.keys() if current[p] != expected[p]),
        added=sorted(current.keys() - expected.keys()),
        removed=sorted(expected.keys() - current.keys()),
    )
