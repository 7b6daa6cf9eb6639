"""Shared fixtures: a private LLM_STUDIO_HOME per test, a small real corpus, the CLI, torch blocked.

Helpers that tests import (tiny training options, trained homes, fixture run folders) are in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def studio_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # never the machine's models
    return home


@pytest.fixture
def code_corpus(tmp_path) -> Path:
    """About 300 KB of real text: a few standard-library modules in one .txt file."""
    import argparse
    import collections
    import dataclasses
    import json.decoder
    import pathlib as pl

    text = "\n\n".join(
        Path(m.__file__).read_text(encoding="utf-8") for m in (argparse, collections, dataclasses, json.decoder, pl)
    )
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def run_cli(studio_home, capsys):
    """Call `llm-studio ARGS...` in this process; returns (exit code, stdout, stderr)."""
    from studio.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def torch_blocked(monkeypatch):
    """The UI process must never import torch: during the test, `import torch` raises ImportError, even when an
    earlier test in this pytest process has loaded it (None in sys.modules halts an import)."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.fixture
def home(trained, monkeypatch):
    """LLM_STUDIO_HOME pointed at the test module's `trained` home (a module-scoped fixture of train_runs)."""
    monkeypatch.setenv("LLM_STUDIO_HOME", str(trained))
    return trained
