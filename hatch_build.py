"""Wheel build hook: ship the template's version history inside the `scaffold` package.

It writes ``scaffold/_data/template.bundle`` (a git bundle made by generator/history.py) and
``scaffold/_data/template.json`` (the version and commit this wheel renders by default), so
`scaffold new` and `scaffold update` need neither the source tree nor the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _history_module(root: Path) -> Any:
    spec = importlib.util.spec_from_file_location("_scaffold_history", root / "generator" / "history.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


class TemplateHistoryHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if version == "editable":
            # The import package `scaffold` is the folder generator/, a rename editable
            # installs cannot express; a regular install takes about a second.
            raise RuntimeError("scaffold does not support editable installs; use: pip install .")
        root = Path(self.root)
        history = _history_module(root)
        if os.environ.get("SCAFFOLD_UNRELEASED") != "1":
            try:
                history.check_released(root, self.metadata.version)
            except history.UnreleasedError as exc:
                raise RuntimeError(f"{exc} (or set SCAFFOLD_UNRELEASED=1 for a development wheel)") from None
        self._tmp = Path(tempfile.mkdtemp(prefix="scaffold-build-"))
        info = history.build_history(root, self._tmp / "repo", self.metadata.version)
        bundle = self._tmp / "template.bundle"
        history.write_bundle(self._tmp / "repo", bundle)
        (self._tmp / "template.json").write_text(info.to_json())
        build_data["force_include"][str(bundle)] = "scaffold/_data/template.bundle"
        build_data["force_include"][str(self._tmp / "template.json")] = "scaffold/_data/template.json"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
