"""Honest memory: the estimate beside the measured peak (events, CLI, dashboard), and out of memory as one line."""

from __future__ import annotations

import sys
import textwrap

import pytest

from studio.run_folder.events import current_history, read_events
from studio.run_folder.layout import find_checkpoint, run_path
from tests.helpers import TINY_TRAIN, fixture_events, tiny_config, wait_for, with_memory, write_fixture_run

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
    fp32 = tiny_config({"train.mixed_precision": "no"})  # "auto" would be bf16 on a GPU already
    message = out_of_memory_message(error, fp32, step=3, peak=3 * 2**30, estimate=2 * 2**30)
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
    assert "--mixed-precision" not in message and "half precision already" in message
    checkpointed = tiny_config({"train.activation_checkpointing": True})
    assert "activation" not in out_of_memory_message(MemoryError(), checkpointed, step=1)  # on already


OUT_OF_MEMORY_AT_STEP_3 = textwrap.dedent(f"""
    import sys
    from studio.train import trainer as worker
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
    from studio.runs import control

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
    from studio.checkpoints.files import read_weights

    checkpoint = find_checkpoint(run_path("oom"))
    weights, metadata = read_weights(checkpoint)
    assert checkpoint.name == "step-0000002" and metadata.step == 2 and weights


# the presets that train in seconds on a CPU
SMALL_PRESETS = ["tiny", "bert-tiny", "lstm-tiny", "rnn-tiny", "nanogpt-cpu", "speedrun-cpu"]


@pytest.mark.slow
def test_the_estimate_is_within_a_fifth_of_the_measured_peak_of_each_small_preset(run_cli, code_corpus):
    """Each small preset as it is (model, batch, context, precision, optimizer) trains a few steps on the CPU; its
    trainer reports the estimate and the runtime's baseline (`running`) and the process's peak RSS (`train`); the
    estimate plus the baseline is held against the peak (studio.train.memory)."""
    from studio.runs.control import wait_for_exit

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


def test_the_memory_line_reads_the_events_on_either_device():
    from studio.cli.console import memory_summary
    from studio.formatting import format_memory

    gigabyte = 2**30
    assert format_memory(2 * gigabyte, 3 * gigabyte, "cuda_allocated", 0) == (
        "memory: estimated 2.0 GB · measured peak 3.0 GB (allocated tensors)"
    )
    events = with_memory(fixture_events(), 130 * 2**20, 330 * 2**20, 520 * 2**20)
    line = "memory: estimated 130.0 MB + 330.0 MB runtime = 460.0 MB · measured peak 520.0 MB (process RSS)"
    assert memory_summary(events) == line  # what the CLI prints when a run ends
    assert memory_summary(fixture_events()) is None  # a trainer that reported no memory


def test_a_run_whose_trainer_reported_no_memory_shows_no_memory_line(studio_home):
    from studio.run_folder.watch import RunWatcher
    from widgets.hardware_panel import memory_line

    watcher = RunWatcher(write_fixture_run("older"))
    watcher.poll()
    assert memory_line(watcher.view()) == ""


@pytest.mark.asyncio
async def test_the_dashboard_shows_the_estimate_beside_the_measured_peak(studio_home, torch_blocked):
    from textual.widgets import Static

    from widgets.app import StudioApp
    from widgets.screens.dashboard import DashboardScreen

    write_fixture_run("measured", events=with_memory(fixture_events(), 130 * 2**20, 330 * 2**20, 520 * 2**20))
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        await pilot.app.workers.wait_for_complete()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the run's dashboard")
        line = app.screen.query_one("#run-memory-line", Static)
        await wait_for(pilot, lambda: line.display, what="the memory line")
        assert str(line.render()) == (
            "memory: estimated 130.0 MB + 330.0 MB runtime = 460.0 MB · measured peak 520.0 MB (process RSS)"
        )
        # a CPU run logs no allocated GPU memory; once ended, its chart is the peak RSS it recorded (issue 21, item 8)
        assert [curve.label for curve in app.screen.query_one("#run-memory").curves] == ["peak RSS"]


def killed_run(name: str, share_of_ram: float):
    """A CPU run whose trainer ended without a word after its last train event, its peak RSS at `share_of_ram` of
    this machine's RAM."""
    import psutil

    ram = psutil.virtual_memory().total
    events = with_memory(fixture_events()[:8], 2**20, 2**20, int(share_of_ram * ram))
    run_dir = write_fixture_run(name, events=events)
    (run_dir / "pid").write_text("999999999 1.0\n")  # launched, and no longer alive
    return run_dir


@pytest.mark.asyncio
async def test_a_trainer_killed_near_the_machines_ram_is_explained_as_the_out_of_memory_killer(
    studio_home, torch_blocked
):
    """SIGKILL leaves the trainer no chance to say anything: the run's events (its peak RSS against this machine's
    RAM) tell the CLI and the dashboard why it most likely ended, and what makes it fit."""
    from textual.widgets import Static

    from studio.run_folder.status import summarize
    from widgets.app import StudioApp
    from widgets.screens.dashboard import DashboardScreen

    near, far = summarize(killed_run("near", 0.9)), summarize(killed_run("far", 0.1))
    assert near.status == far.status == "crashed"
    assert near.error.startswith("the trainer was killed at step 20 without a word, training batch 32 × context 128")
    assert "with a peak of " in near.error and "most likely by the system's out-of-memory killer" in near.error
    assert all(lever in near.error for lever in LEVERS) and "\n" not in near.error
    assert far.error.startswith("the trainer ended at step 20 without a word") and "batch_size" not in far.error
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        await pilot.app.workers.wait_for_complete()
        await pilot.press("enter")  # the first run made: "near"
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the run's dashboard")
        banner = app.screen.query_one("#run-error", Static)
        await wait_for(pilot, lambda: banner.display, what="the crash banner")
        assert str(banner.render()) == f"crashed: {near.error}"


def test_under_fsdp_a_process_holds_a_share_of_the_states_and_the_units_it_gathers():
    """GPT-2 124M on 4 processes: a quarter of the weights, gradients and AdamW moments each, plus what is gathered
    whole at once (the root: token and position tables, final LayerNorm; two of the 12 blocks) as bf16 weights
    and gradients; the activations are a process's own either way."""
    from studio.presets import load_preset
    from studio.sizing.sizes import estimate_train_memory

    config = load_preset("gpt2-124m")
    config.train.num_processes = 4
    whole = estimate_train_memory(config.model, config.train, 50257)
    config.train.sharding = "fsdp"
    shared = estimate_train_memory(config.model, config.train, 50257)
    root = 50257 * 768 + 1024 * 768 + 2 * 768
    block = (124_439_808 - root) / 12
    assert shared["gradients"] == whole["gradients"] // 4 and shared["optimizer"] == whole["optimizer"] // 4
    assert config.train.mixed_precision == "bf16"  # gathered weights and gradients are 2 bytes each
    assert shared["weights"] == whole["weights"] // 4 + int(2 * 2 * (root + 2 * block))
    assert shared["activations"] == whole["activations"]
    assert shared["total"] == sum(value for part, value in shared.items() if part != "total")
    states = sum(whole[part] for part in ("weights", "gradients", "optimizer"))
    print(f"states per process: {states / 1e9:.2f} GB whole, {(shared['total'] - shared['activations']) / 1e9:.2f} GB")
    assert shared["total"] - shared["activations"] < 0.5 * states


def test_the_estimate_counts_what_loras_dropout_keeps_for_the_backward(tmp_path):
    """A LoRA step of a tiny Llama: with train.lora_dropout each adapter keeps its own dropped-out copy of its layer's
    input and the mask; what the estimate adds for them is what autograd's saved tensors add (counted by storage)."""
    import torch

    from studio.config import RunConfig
    from studio.hf.folder import run_facts
    from studio.hf.inspection import inspect_folder
    from studio.model.trainable import build_run_model
    from studio.runs.prepare import resolve_init_from
    from studio.sizing.sizes import method_sizes
    from tests.hf_models import make_hf_model

    folder = tmp_path / "llama"
    make_hf_model(folder, "llama")
    config = RunConfig()
    config.train.init_from, config.train.method, config.train.batch_size = str(folder), "lora", 2
    config.train.lean_activations = False  # peft's own dropout (recomputed, it keeps nothing: tests/test_recompute.py)
    config.model.block_size = 32
    resolve_init_from(config)  # the model's config from the folder, as prepare_run takes it
    config.model.vocab_size = 320
    facts = run_facts(config, inspect_folder)
    ids = torch.randint(320, (2, 32), generator=torch.Generator().manual_seed(0))

    def saved_and_estimated(dropout: float) -> tuple[int, int]:
        config.train.lora_dropout = dropout
        model = build_run_model(config).module.train()
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(ids)
        return sum(storages.values()), method_sizes(config.model, config.train, facts).memory["activations"]

    (saved_without, estimated_without), (saved_with, estimated_with) = map(saved_and_estimated, (0.0, 0.1))
    assert saved_with - saved_without > 0.3 * saved_without  # the copies: not a detail, even beside the logits
    assert estimated_with - estimated_without == pytest.approx(saved_with - saved_without, rel=0.05)


def test_with_the_chunked_loss_the_estimate_counts_one_chunk_of_logits_not_every_tokens():
    """A Qwen2.5-0.5B-shaped model at context 2048: whole logits are 3 fp32 vocabulary rows per token (3.7 GB);
    chunked, 3 rows per token of one chunk (under full fine-tuning, which trains the head, as many tokens as the
    width: 896, not 110), plus the learned states and their gradient, which grow with the context by 2·width values
    per token and no longer by the vocabulary."""
    from studio.sizing.sizes import estimate_train_memory, loss_chunk_rows

    vocab, width = 151_936, 896
    shape = {"model.arch": "llama", "model.n_layer": 24, "model.n_embd": width, "model.n_head": 14}
    config = tiny_config({**shape, "model.vocab_size": vocab, "train.batch_size": 1, "model.block_size": 2048})

    def activations(chunked: bool, block_size: int) -> int:
        config.train.chunked_loss, config.model.block_size = chunked, block_size
        return estimate_train_memory(config.model, config.train)["activations"]

    assert loss_chunk_rows(vocab, True) == 110  # 64 MiB of fp32 logits, the head frozen
    chunk = loss_chunk_rows(vocab, True, width)
    assert chunk == width  # the head trains (full fine-tuning, tiny_config's method)
    saved = activations(False, 2048) - activations(True, 2048)
    assert saved == 3 * 4 * (2048 - chunk) * vocab - 2 * 4 * 2048 * width
    assert saved > 2e9
    grown_whole = activations(False, 2048) - activations(False, 1024)
    grown_chunked = activations(True, 2048) - activations(True, 1024)
    assert grown_whole - grown_chunked == 1024 * (3 * 4 * vocab - 2 * 4 * width)


def test_running_out_of_memory_with_the_chunked_loss_off_suggests_it_first():
    from studio.sizing.memory_advice import to_fit

    off = tiny_config({"train.chunked_loss": False})
    assert to_fit(off, "CPU", setting_up=False).startswith(
        "to fit, turn on the chunked loss (--set train.chunked_loss=true: the logits never whole), lower"
    )
    assert "chunked" not in to_fit(tiny_config(), "CPU", setting_up=False)  # on already (the default)
    classifier = tiny_config({"train.chunked_loss": False, "train.task": "classify"})
    assert "chunked" not in to_fit(classifier, "CPU", setting_up=False)  # one row of labels per text
