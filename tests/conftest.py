"""Shared fixtures: a private LLM_STUDIO_HOME per test, a small real corpus, the CLI, torch blocked,
Hugging Face folders inspected in-process.

Helpers that tests import (tiny training options, trained homes, fixture run folders) are in tests/helpers.py."""

from __future__ import annotations

import json
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


@pytest.fixture
def chat_rows(tmp_path) -> Path:
    """Six conversations of different lengths, one of them multi-turn (the chat set of the fine-tuning tests)."""
    rows = [
        {"messages": [{"role": "user", "content": "add"}, {"role": "assistant", "content": "def add(a, b):"}]},
        {"messages": [{"role": "user", "content": "point"}, {"role": "assistant", "content": "class Point:"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x: int"}]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "sum"},
                {"role": "assistant", "content": "return a + b"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "return a + b\n    y: int"},
            ]
        },
        {"messages": [{"role": "user", "content": "y"}, {"role": "assistant", "content": "y: int"}]},
        {"messages": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "a, b"}]},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def inspection_in_process(monkeypatch):
    """studio.hf.inspection run in this process instead of a child, for tests that train in-process (torch and
    transformers loaded already) and whose claim is not the child: the child's start (importing both, building the
    model) is seconds for every Hugging Face folder such a test prepares. The child itself stays tested elsewhere."""
    import contextlib
    import io
    import subprocess

    from studio.hf import folder, inspection

    def in_process(args: list[str]) -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = inspection.main(args)
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    monkeypatch.setattr(folder, "_inspection_child", in_process)
