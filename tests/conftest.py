"""Shared fixtures: a private LLM_STUDIO_HOME per test, small real corpora, tiny configs, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

@pytest.fixture
def studio_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    return home


@pytest.fixture
def code_corpus(tmp_path) -> Path:
    """About 300 KB of real text: a few standard-library modules in one .txt file."""
    import argparse, collections, dataclasses, json.decoder, pathlib as pl  # noqa: E401

    text = "\n\n".join(Path(m.__file__).read_text(encoding="utf-8")
                       for m in (argparse, collections, dataclasses, json.decoder, pl))
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


# Options for a model small enough that a trainer process does 100 steps in a few seconds on 2 cores.
TINY_TRAIN = [
    "--preset", "tiny", "--tokenizer", "char",
    "--set", "model.n_layer=2", "--set", "model.n_head=2", "--set", "model.n_embd=32",
    "--set", "model.block_size=32", "--set", "train.batch_size=8", "--set", "train.warmup_steps=5",
    "--set", "train.log_interval=5", "--set", "train.eval_interval=10", "--set", "train.eval_steps=2",
    "--set", "train.sample_interval=20", "--set", "train.sample_tokens=8",
]



@pytest.fixture
def torch_blocked(monkeypatch):
    """The UI process must never import torch: during the test, `import torch` raises ImportError, even when an
    earlier test in this pytest process has loaded it (None in sys.modules halts an import)."""
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)


ADD_FUNCTION = "def add(a, b):\n    return a + b\n\n"


def train_runs(tmp_path_factory, corpus_text: str, runs: dict[str, list[str]]) -> Path:
    """A studio home for a test module holding tiny runs trained once through the CLI (name -> extra args)."""
    from studio.cli.main import main

    home = tmp_path_factory.mktemp("home")
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLM_STUDIO_HOME", str(home))
        for name, extra in runs.items():
            assert main(["train", *TINY_TRAIN, "--data", str(corpus), "--name", name, *extra]) == 0
    return home


@pytest.fixture
def home(trained, monkeypatch):
    """LLM_STUDIO_HOME pointed at the test module's `trained` home (a module-scoped fixture of train_runs)."""
    monkeypatch.setenv("LLM_STUDIO_HOME", str(trained))
    return trained
