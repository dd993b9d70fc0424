"""`scaffold port`: run the project's own `python -m <package>.engine.port` on Lightning code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .create import ANSWERS_FILE, read_answers
from .errors import BadInput, ScaffoldError


def find_project(start: Path) -> Path:
    """The scaffold project containing ``start`` (the folder holding .copier-answers.yml)."""
    start = start.expanduser().resolve()
    for folder in (start, *start.parents):
        if (folder / ANSWERS_FILE).is_file():
            return folder
    raise BadInput(f"no scaffold project at or above {start} (no {ANSWERS_FILE}); run inside one or pass --project DIR")


def run_port(paths: list[Path], check: bool = False, project: Path | None = None) -> tuple[int, str, str]:
    """Port ``paths`` with the project's engine; returns (exit code, stdout, stderr) of the port."""
    root = find_project(project if project is not None else Path.cwd())
    package = str(read_answers(root)["package_name"])
    src = root / "src"
    if not (src / package / "engine" / "port.py").is_file():
        raise ScaffoldError(
            f"{src / package / 'engine'} has no port.py: its engine predates the port command; run scaffold update"
        )
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise BadInput(f"no such file or folder: {', '.join(missing)} (nothing was changed)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", f"{package}.engine.port", *(str(p) for p in paths), *(["--check"] if check else [])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if "No module named 'torch'" in done.stderr:
        raise ScaffoldError(
            "the port loads the engine, which needs torch; run it in the project's environment: "
            f"python -m {package}.engine.port {' '.join(str(p) for p in paths)}"
        )
    return done.returncode, done.stdout, done.stderr
