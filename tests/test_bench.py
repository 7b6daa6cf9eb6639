"""`llm-studio bench`, shrunk to seconds (a tiny plan; the CPU's peak FLOP/s a constant instead of timed matmuls):
the report's structure, every figure a positive number with its unit, the device named, what needs a GPU said on a
CPU, and nothing left in the user's home. Figures are never held against thresholds: timings are noisy."""

from __future__ import annotations

import json

import pytest
import torch

from studio.hardware import cpu_name
from studio.reports import bench

TINY = bench.Plan(
    name="test",
    corpus_chars=100_000,
    warmup_steps=0,
    steps=1,
    rounds=1,
    step_budget_s=1.0,
    base_preset="nanogpt-cpu",
    new_tokens=2,
    batches=(1, 2),
    contexts=(16,),
    widths=(32,),
    presets=("nanogpt-cpu", "llama-1b"),
)
TABLES = {"presets", "overhead", "loss", "data", "generation", "scaling_batch", "scaling_context", "scaling_width"}


@pytest.fixture
def one_thread():
    """Two torch threads on a shared 2-core machine spin against the other processes (a step 10-50x slower): one
    keeps the test at seconds. No figure's value is checked, only that it is there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # trains a few steps of tiny models in this process
def test_bench_quick_prints_the_tables_and_writes_every_figure_with_its_unit(
    run_cli, studio_home, tmp_path, monkeypatch, one_thread
):
    monkeypatch.setattr(bench, "QUICK", TINY)
    monkeypatch.setattr("studio.train.trainer._measured_matmul_flops", lambda dtype: 1e11)
    out_file = tmp_path / "bench.json"

    code, out, err = run_cli("bench", "--quick", "--json", out_file)

    assert code == 0, err
    report = json.loads(out_file.read_text())
    device = report["device"]
    assert set(report["tables"]) == TABLES and report["plan"] == "test" and report["wall_seconds"] > 0
    assert device["memory_bytes"] > 0 and device["cpu_cores"] >= 1 and device["torch_threads"] == 1
    assert report["load_average_at_start"] >= 0
    for key, table in report["tables"].items():
        units = {column["name"]: column["unit"] for column in table["columns"]}
        assert table["title"] and table["rows"], key
        for row in table["rows"]:
            assert set(row) == set(units), key
            figures = [row[name] for name, unit in units.items() if unit and row[name] is not None]
            assert figures and all(isinstance(v, (int, float)) and v > 0 for v in figures), (key, row)

    presets = {row["preset"]: row for row in report["tables"]["presets"]["rows"]}
    assert presets["nanogpt-cpu"]["train"] > 0 and 0 < presets["nanogpt-cpu"]["MFU"]
    assert presets["llama-1b"]["train"] is None and presets["llama-1b"]["note"]  # too big here: listed, with why
    overhead = {row["loop"]: row["vs bare"] for row in report["tables"]["overhead"]["rows"]}
    assert overhead["bare PyTorch loop"] == 1.0 and overhead["llm-studio Trainer"] > 0
    whole, chunked = report["tables"]["loss"]["rows"]
    assert whole["loss"] == "whole logits" and whole["vs whole"] == 1.0
    assert chunked["loss"] in ("chunked (pytorch)", "cut-cross-entropy") and chunked["estimate"] < whole["estimate"]
    assert report["tables"]["data"]["rows"][0]["peak RSS"] > 0  # the prepare command's own, measured
    assert [row["batch"] for row in report["tables"]["scaling_batch"]["rows"]] == [1, 2]

    assert device["name"] in out and "| nanogpt-cpu" in out and "train tokens/s" in out
    if device["type"] == "cpu":
        assert device["name"] == cpu_name()
        assert "needs a GPU: " in presets["llama-1b"]["note"]
        assert "training llama-1b" in report["needs_gpu"] and "Needs a GPU" in out and "bf16" in out
    else:
        assert report["needs_gpu"] == []
    assert not studio_home.exists() or not any(studio_home.iterdir())  # the bench's files lived in a temporary home


def test_a_json_file_in_a_missing_folder_is_refused_before_measuring(run_cli, tmp_path):
    code, out, err = run_cli("bench", "--quick", "--json", tmp_path / "nowhere" / "bench.json")
    assert code == 2 and "no folder" in err and "Traceback" not in err and out == ""


def test_a_preset_is_trained_where_its_memory_and_step_fit_and_listed_with_why_elsewhere(tmp_path):
    """The rule behind the presets table, for a GPU too: on an H100 (80 GiB, its step estimated at 30% of the
    spec-sheet peak) llama-1b trains; on a CPU of 24 GiB it needs a GPU for its memory; a step over the plan's
    budget is skipped for time on a GPU, and needs a GPU on a CPU once it is over the full bench's budget too."""
    llama = bench.Bench(bench.QUICK, torch.device("cpu"), tmp_path / "corpus.txt").config("llama-1b")
    h100 = bench.likely_gpu_flops("NVIDIA H100 80GB HBM3")
    assert h100 > 1e14 and bench.likely_gpu_flops("Mystery GPU") == 0.0
    assert bench.skip_reason(llama, bench.FULL, True, 80 * 2**30, h100) == ""
    assert bench.skip_reason(llama, bench.QUICK, False, 24 * 2**30, 1e11).startswith("needs a GPU: needs about")
    slow_gpu = bench.skip_reason(llama, bench.QUICK, True, 80 * 2**30, 1e13)
    assert slow_gpu.startswith("skipped for time: about") and "quick allows 1" in slow_gpu
    assert bench.skip_reason(llama, bench.QUICK, False, 2**40, 1e11).startswith("needs a GPU: about")


def test_the_cpu_is_named():
    assert cpu_name().strip()
