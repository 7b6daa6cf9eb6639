"""The layering rules hold (pyproject.toml's import-linter contracts, docs/ARCHITECTURE.md), and they bite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
TOOLS = Path(sys.executable).parent  # lint-imports and ruff are installed beside this Python


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))  # the tree at root, not the installed one
    return subprocess.run(
        [str(TOOLS / "lint-imports"), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 kept, 0 broken" in result.stdout


def test_a_widget_that_imports_torch_breaks_the_contract(tmp_path):
    for part in ("studio", "widgets", "presets", "assets", "pyproject.toml"):
        source = REPO / part
        copy = shutil.copytree if source.is_dir() else shutil.copyfile
        copy(source, tmp_path / part)
    widget = tmp_path / "widgets" / "log_tail.py"
    widget.write_text(widget.read_text(encoding="utf-8") + "\nimport torch  # noqa\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "widgets.log_tail -> torch" in result.stdout


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("studio", "widgets", cache_dir=None)
    cycles = [
        chain
        for importer in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(importer)
        if (chain := graph.find_shortest_chain(importer=imported, imported=importer))
    ]
    assert cycles == []


def test_ruff_finds_nothing_to_fix():
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([str(TOOLS / "ruff"), *command], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:]


def test_the_architecture_names_every_module_and_every_run_folder_file():
    from studio.checkpoints import files as checkpoint
    from studio.run_folder import layout

    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [
        path.relative_to(REPO / package).as_posix()
        for package in ("studio", "widgets")
        for path in sorted((REPO / package).rglob("*.py"))
    ]
    assert [module for module in modules if f"`{module}`" not in architecture] == []
    files = [
        layout.CONFIG,
        layout.EVENTS,
        layout.TRAINER_LOG,
        layout.EVALUATIONS,
        layout.PID,
        layout.STOP,
        layout.CHECKPOINT_REQUEST,
        f"{layout.CHECKPOINTS}/{layout.LATEST}",
        layout.WEIGHTS,
        checkpoint.OPTIMIZER,
        checkpoint.TRAINER_STATE,
    ]
    assert [name for name in files if name not in architecture] == []
