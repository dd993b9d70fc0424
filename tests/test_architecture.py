"""The engine's shape: its import layers (import-linter), who touches the Trainer's private state,
and a version module that imports nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
from scaffold.history import read_version

import engine

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
# The modules that own the Trainer's state; every other engine module goes through its public API.
OWNERS = {"trainer.py", "fit_loop.py"}
TRAINER_NAMES = {"trainer", "_trainer"}  # `trainer`, `self.trainer`, `self._trainer`, `module.trainer`


def test_import_contracts_hold() -> None:
    """pyproject.toml's [tool.importlinter] contracts: the layers, no generator or Lightning in the engine."""
    lint = Path(sys.executable).parent / "lint-imports"
    assert lint.is_file(), f"{lint} is missing: install the dev extras (ci/setup-venv)"
    proc = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _holds_trainer(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in TRAINER_NAMES
    return isinstance(node, ast.Attribute) and node.attr in TRAINER_NAMES


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_") and not name.startswith("__")


def private_trainer_uses(source: str) -> list[tuple[int, str]]:
    """Lines reading or writing a Trainer's private attribute: `trainer._x`, `getattr(trainer, "_x")`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _holds_trainer(node.value):
            found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and _holds_trainer(node.args[0])
            and isinstance(node.args[1], ast.Constant)
            and _private(node.args[1].value)
        ):
            found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def test_the_private_state_scan_sees_each_spelling() -> None:
    source = (
        "trainer._a\nself.trainer._b = 1\nself._trainer._c()\ngetattr(trainer, '_d', None)\n"
        "trainer.public\ntrainer.__class__\nother._e\n# trainer._comment\n"
    )
    assert [name for _, name in private_trainer_uses(source)] == [
        "trainer._a",
        "self.trainer._b",
        "self._trainer._c",
        "getattr(trainer, '_d', None)",
    ]


def test_only_the_trainer_and_its_fit_loop_touch_its_private_state() -> None:
    offenders = [
        f"engine/{path.name}:{line}: {name}"
        for path in sorted(ENGINE.glob("*.py"))
        if path.name not in OWNERS
        for line, name in private_trainer_uses(path.read_text())
    ]
    assert not offenders, f"{len(offenders)} uses of the Trainer's private state:\n" + "\n".join(offenders)


def test_no_engine_module_imports_the_package_itself() -> None:
    """engine/__init__.py imports every module: a submodule importing it is a cycle."""
    graph = grimp.build_graph("engine", cache_dir=None)
    importers = sorted(graph.find_modules_that_directly_import("engine"))
    assert not importers, [graph.get_import_details(importer=m, imported="engine") for m in importers]


def test_the_version_module_is_a_leaf() -> None:
    """engine/version.py loads on its own and pulls in nothing: not torch, not the rest of the engine."""
    script = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('engine.version', {str(ENGINE / 'version.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print(module.__version__)\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True)
    version, new_modules = proc.stdout.splitlines()
    assert new_modules == "[]"
    assert version == engine.__version__ == read_version(ROOT)
    tree = ast.parse((ENGINE / "version.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _layered_modules() -> set[str]:
    """Every module named in the engine's layers contract (pyproject.toml)."""
    import re

    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return {name.strip() for layer in layers for name in re.split(r"[|:]", layer.strip("()")) if name.strip()}


def test_every_engine_file_has_a_layer_and_a_line_in_the_architecture_page() -> None:
    """A new engine file must be placed in a layer and described in ARCHITECTURE.md (the page the
    generated project's engine/__init__.py points to), so the page stays true."""
    files = {p.stem for p in ENGINE.glob("*.py") if p.name != "__init__.py"}
    layered = _layered_modules()
    assert files - layered == set(), f"engine files in no layer of pyproject.toml: {sorted(files - layered)}"
    assert layered - files == set(), f"layers name missing files: {sorted(layered - files)}"
    page = (ENGINE / "ARCHITECTURE.md").read_text()
    assert [f for f in sorted(files) if f"`{f}.py`" not in page] == []
    assert "ARCHITECTURE.md" in (ENGINE / "__init__.py").read_text()
