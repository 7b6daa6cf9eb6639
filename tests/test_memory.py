"""Honest memory: the estimate beside the measured peak (events, CLI, dashboard), and out of memory as one line."""

from __future__ import annotations

import sys
import textwrap

import pytest

from studio.run_folder.events import current_history, read_events
from studio.run_folder.layout import find_checkpoint, run_path
from tests.helpers import TINY_TRAIN, tiny_config

CPU_ALLOCATOR_ERROR = (  # what torch's CPU allocator raises (torch 2.13), word for word
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"
)
LEVERS = ("train.batch_size", "train.grad_accum", "model.block_size", "activation checkpointing", "bf16")


def out_of_memory_errors():
    import torch

    return {
        "cuda": torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        "cpu allocator": RuntimeError(CPU_ALLOCATOR_ERROR),
        "python": MemoryError(),
    }


@pytest.mark.parametrize("kind", ["cuda", "cpu allocator", "python"])
def test_running_out_of_memory_anywhere_is_one_line_naming_every_lever(kind):
    from studio.train.memory import is_out_of_memory, out_of_memory_message

    error = out_of_memory_errors()[kind]
    assert is_out_of_memory(error)
    message = out_of_memory_message(error, tiny_config(), step=3, peak=3 * 2**30, estimate=2 * 2**30)
    where = "GPU" if kind == "cuda" else "CPU"
    assert message.startswith(f"out of {where} memory at step 3 with batch 8 × context 32")
    assert "measured peak 3.0 GB, estimated 2.0 GB" in message and "\n" not in message
    assert all(lever in message for lever in LEVERS), message


def test_other_errors_are_not_called_out_of_memory_and_half_precision_is_not_offered_twice():
    from studio.train.memory import is_out_of_memory, out_of_memory_message

    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))  # only the allocator's RuntimeError
    message = out_of_memory_message(MemoryError(), tiny_config({"train.mixed_precision": "bf16"}), step=None)
    assert "while setting up" in message and "smaller model" in message
    assert "--mixed-precision" not in message and "already" in message


OUT_OF_MEMORY_AT_STEP_3 = textwrap.dedent(f"""
    import sys
    from studio.train import worker
    original = worker.Trainer.train_step
    def train_step(self, log):
        if self.state.step == 3:
            raise RuntimeError({CPU_ALLOCATOR_ERROR!r})
        return original(self, log)
    worker.Trainer.train_step = train_step
    sys.exit(worker.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_run_out_of_memory_ends_with_the_line_keeps_its_checkpoint_and_logs_the_traceback(
    run_cli, code_corpus, tmp_path, monkeypatch
):
    from studio.run_folder import control

    script = tmp_path / "out_of_memory_worker.py"
    script.write_text(OUT_OF_MEMORY_AT_STEP_3)
    launch_command = control.trainer_command

    def command(run_dir, config, resume_from):  # the real trainer, its step made to run out of CPU memory
        _, env = launch_command(run_dir, config, resume_from)
        return [sys.executable, str(script), str(run_dir)], env

    monkeypatch.setattr(control, "trainer_command", command)
    code, out, err = run_cli(
        "train", *TINY_TRAIN, "--data", code_corpus, "--name", "oom", "--max-steps", 10,
        "--set", "train.checkpoint_interval=2", "--set", "train.log_interval=1",
    )  # fmt: skip
    assert code == 1
    events = current_history(read_events(run_path("oom") / "events.jsonl"))
    error, status = events[-2:]
    assert status["state"] == "failed" and error["kind"] == "error" and error["step"] == 3
    line = error["message"]
    assert line.startswith("out of CPU memory at step 3 with batch 8 × context 32 (measured peak ")
    assert all(lever in line for lever in LEVERS) and "\n" not in line
    assert f"step      3  error: {line}" in out  # the CLI prints the line as it comes
    assert "memory: estimated " in out  # and, at the end, the estimate beside the measured peak
    log = (run_path("oom") / "trainer.log").read_text()
    assert "Traceback (most recent call last)" in log and "DefaultCPUAllocator" in log
    from studio.weights import read_weights

    checkpoint = find_checkpoint(run_path("oom"))
    weights, metadata = read_weights(checkpoint)
    assert checkpoint.name == "step-0000002" and metadata["step"] == "2" and weights


SMALL_PRESETS = ["tiny", "bert-tiny", "lstm-tiny", "rnn-tiny", "nanogpt-cpu"]  # those that train in seconds on CPU


@pytest.mark.slow
def test_the_estimate_is_within_a_fifth_of_the_measured_peak_of_each_small_preset(run_cli, code_corpus):
    """Each small preset as it is (model, batch, context, precision, optimizer) trains a few steps on the CPU; its
    trainer reports the estimate and the runtime's baseline (`running`) and the process's peak RSS (`train`); the
    estimate plus the baseline is held against the peak (studio.train.memory)."""
    from studio.run_folder.control import wait_for_exit

    quick = ["--max-steps", 6, "--set", "train.log_interval=1", "--set", "train.eval_steps=1"]
    for preset in SMALL_PRESETS:  # all at once: each trainer's memory is its own
        code, _, err = run_cli(
            "train", "--preset", preset, "--data", code_corpus, "--name", preset, *quick,
            "--set", "train.sample_interval=0", "--detach",
        )  # fmt: skip
        assert code == 0, err
    figures = {}
    for preset in SMALL_PRESETS:
        wait_for_exit(run_path(preset), 600)
        events = current_history(read_events(run_path(preset) / "events.jsonl"))
        assert events[-1]["state"] == "finished", events[-1]
        running = next(e for e in events if e.get("state") == "running")
        assert running["mem_measure"] == "rss" and running["mem_baseline"] > 0
        measured = max(e["mem_peak"] for e in events if e["kind"] == "train")
        figures[preset] = (running["mem_estimate"], running["mem_baseline"], measured)
    table = ", ".join(f"{p} {e / 2**20:.0f}+{b / 2**20:.0f}/{m / 2**20:.0f}" for p, (e, b, m) in figures.items())
    print(f"estimate + runtime / measured peak RSS (MiB): {table}")
    assert all(abs((estimate + baseline) / peak - 1) <= 0.2 for estimate, baseline, peak in figures.values()), table
