"""Past one process: several processes (and accumulation) train as one process with the same global batch, and
several machines are launched through `accelerate launch`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio.checkpoints.training_state import TrainingState
from studio.config import RunConfig
from studio.data.batches import MaskedWindowStream, TokenFile, WindowStream
from studio.run_folder.events import read_events
from studio.run_folder.layout import EVENTS, find_checkpoint, run_path
from studio.runs.control import trainer_command
from studio.runs.prepare import prepare_run
from studio.train.trainer import Trainer
from tests.helpers import tiny_config

STEPS = 12
# A tiny decoder pretrained for STEPS steps, a train event every step and one evaluation at the end.
EQUIVALENCE = {
    "train.max_steps": STEPS,
    "train.batch_size": 4,
    "train.global_batch": 8,
    "train.lr": 1e-2,
    "train.warmup_steps": 2,
    "train.log_interval": 1,
    "train.eval_interval": STEPS,
    "train.eval_steps": 2,
    "train.sample_interval": 0,
    "train.checkpoint_interval": STEPS,
}
# Floating-point sums in another order (gloo's all-reduce, micro-batches added one by one) are all that differ.
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-5


def train_in_process(config: RunConfig, name: str) -> Path:
    run_dir = prepare_run(config, name)
    Trainer(run_dir).run()
    return run_dir


def curves(run_dir: Path) -> tuple[list[float], float]:
    """The train loss of every step, and the last validation loss."""
    events = read_events(run_dir / EVENTS)
    losses = [event["loss"] for event in events if event["kind"] == "train"]
    return losses, [event["val_loss"] for event in events if event["kind"] == "eval"][-1]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(find_checkpoint(run_dir) / "model.safetensors")


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.mark.slow
@pytest.mark.parametrize(("sharding", "batch_size"), [("ddp", 4), ("fsdp", 2)])
def test_two_processes_reach_the_losses_of_one_with_the_same_global_batch(run_cli, code_corpus, sharding, batch_size):
    """Only --num-processes changes: with train.global_batch set, one process accumulates 2 micro-batches of 4,
    two processes take one each, over the same windows (and eval_steps, which counts batches per process, is
    doubled for one process: the same validation windows). Each of the two holds the whole model (DDP), or half of
    it (FSDP) and accumulates 2 micro-batches of 2, its gradients reduce-scattered after each: the steps are the
    same."""
    one = tiny_config({**EQUIVALENCE, "data.source": str(code_corpus), "train.eval_steps": 4})
    assert one.train.accum_steps == 2
    one_dir = train_in_process(one, "one")
    changes = {**EQUIVALENCE, "train.batch_size": batch_size, "train.eval_steps": 8 // batch_size}
    settings = [word for key, value in changes.items() for word in ("--set", f"{key}={value}")]
    code, _, err = run_cli(
        "train", "--preset", "tiny", "--tokenizer", "char", "--data", code_corpus, *tiny_settings(), *settings,
        "--num-processes", 2, "--sharding", sharding, "--name", "two",
    )  # fmt: skip
    assert code == 0, err
    two_dir = run_path("two")
    assert RunConfig.load(two_dir / "config.toml").train.accum_steps == 8 // (2 * batch_size)
    running = next(e for e in read_events(two_dir / EVENTS) if e.get("state") == "running")
    assert running["world_size"] == 2
    (one_losses, one_val), (two_losses, two_val) = curves(one_dir), curves(two_dir)
    assert len(one_losses) == len(two_losses) == STEPS
    assert one_losses[-1] < one_losses[0] - 0.5  # it learned: the comparison is not of constants
    differences = [abs(a - b) for a, b in zip(one_losses, two_losses)]
    weight_difference = largest_difference(weights(one_dir), weights(two_dir))
    print(f"train losses {max(differences):.1e}, val loss {one_val} vs {two_val}, weights {weight_difference:.1e}")
    assert max(differences) < LOSS_TOLERANCE
    assert abs(one_val - two_val) < LOSS_TOLERANCE
    assert weight_difference < WEIGHT_TOLERANCE


@pytest.mark.slow
def test_a_sharded_run_resumes_exactly_and_its_checkpoints_load_in_one_process(run_cli, code_corpus, tmp_path):
    """FSDP checkpoints hold every tensor whole: the run resumed from step 6 ends with the weights (and the sample)
    of the run that went straight on, and one process exports it (transformers' logits checked against the
    studio's) and generates from it. Samples are written while sharded: every process gathers the whole weights
    and rank 0 generates alone."""
    changes = {**EQUIVALENCE, "train.checkpoint_interval": 6, "train.sample_interval": 6}
    settings = [word for key, value in changes.items()
                for word in ("--set", f"{key}={value}")]  # fmt: skip
    code, _, err = run_cli(
        "train", "--preset", "tiny", "--tokenizer", "char", "--data", code_corpus, *tiny_settings(), *settings,
        "--num-processes", 2, "--sharding", "fsdp", "--name", "sharded",
    )  # fmt: skip
    assert code == 0, err
    run_dir = run_path("sharded")
    straight_on, samples = weights(run_dir), last_samples(run_dir)
    code, _, err = run_cli("resume", "sharded", "--checkpoint", 6)
    assert code == 0, err
    assert largest_difference(straight_on, weights(run_dir)) == 0.0
    assert samples[0] == STEPS and last_samples(run_dir) == samples
    code, out, err = run_cli("export", "sharded", "--out", tmp_path / "exported")
    assert code == 0 and "checked with transformers" in out, err
    code, out, err = run_cli("generate", "sharded", "--prompt", "def ", "--max-new-tokens", 8)
    assert code == 0 and out.startswith("def "), err


def preference_rows() -> list[dict]:
    """25 preference pairs whose chosen answers say yes: at a validation share of 0.2, 5 held out."""
    answers = {"chosen": "yes yes", "rejected": "no no"}
    return [
        {"prompt": [{"role": "user", "content": f"Question {i}?"}]}
        | {key: [{"role": "assistant", "content": text}] for key, text in answers.items()}
        for i in range(25)
    ]


@pytest.mark.slow
def test_a_transformers_checkpoint_trains_sharded_as_in_one_process(run_cli, tmp_path):
    """A transformers folder trained with DPO by two FSDP processes takes the steps of one process with the same
    global batch. The chunked loss runs the decoder and the head apart (for every objective: DPO's answer
    log-probabilities as SFT's cross-entropy), so the module called must be FSDP's root unit, or the embeddings are
    still sharded when the decoder reads them. The 5 held-out pairs fall 3 and 2 to the two processes: both run 2
    batches (the second process's last one only takes its part in FSDP's gathers), and the figures are one
    process's."""
    from tests.hf_models import CHATML, make_hf_model

    folder, data = tmp_path / "base", tmp_path / "rows.jsonl"
    make_hf_model(folder, "llama", chat_template=CHATML)
    data.write_text("".join(json.dumps(row) + "\n" for row in preference_rows()), encoding="utf-8")
    settings = {"train.batch_size": 2, "train.global_batch": 4, "train.max_steps": 4, "train.lr": 1e-2,
                "train.warmup_steps": 0, "train.log_interval": 1, "train.eval_interval": 4,
                "train.sample_interval": 0, "data.val_fraction": 0.2, "model.block_size": 64}  # fmt: skip
    command = ["train", "--init-from", folder, "--data", data, "--objective", "dpo", "--method", "full"]
    command += [word for key, value in settings.items() for word in ("--set", f"{key}={value}")]
    assert run_cli(*command, "--name", "one")[0] == 0
    code, _, err = run_cli(*command, "--name", "two", "--num-processes", 2, "--sharding", "fsdp")
    assert code == 0, err
    (one_losses, one_val), (two_losses, two_val) = curves(run_path("one")), curves(run_path("two"))
    assert len(one_losses) == len(two_losses) == 4 and one_losses[-1] < one_losses[0]  # it learned
    assert max(abs(a - b) for a, b in zip(one_losses, two_losses)) < LOSS_TOLERANCE
    assert abs(one_val - two_val) < LOSS_TOLERANCE


def last_samples(run_dir: Path) -> tuple[int, list[dict]]:
    """The step and texts of the last sample event."""
    event = [event for event in read_events(run_dir / EVENTS) if event["kind"] == "sample"][-1]
    return event["step"], event["samples"]


def tiny_settings() -> list[str]:
    from tests.helpers import TINY_SETTINGS

    return [word for key, value in TINY_SETTINGS.items() for word in ("--set", f"{key}={value}")]


@pytest.mark.parametrize("split", [{"train.grad_accum": 4}, {"train.global_batch": 8}])
def test_accumulated_micro_batches_train_as_one_larger_batch(studio_home, code_corpus, split):
    """Pretraining windows: 4 micro-batches of 2 accumulated (given as grad_accum, or derived from global_batch)
    equal one batch of 8, step after step."""
    base = {**EQUIVALENCE, "data.source": str(code_corpus), "train.max_steps": 5, "train.eval_interval": 5}
    whole = train_in_process(tiny_config({**base, "train.batch_size": 8, "train.global_batch": 0}), "whole")
    changes = {**base, "train.batch_size": 2, "train.global_batch": 0, **split}
    accumulated = train_in_process(tiny_config(changes), "accumulated")
    (whole_losses, _), (split_losses, _) = curves(whole), curves(accumulated)  # evaluations differ: batch 8 vs 2
    differences = [abs(a - b) for a, b in zip(whole_losses, split_losses)]
    weight_difference = largest_difference(weights(whole), weights(accumulated))
    print(f"train losses {max(differences):.1e} apart, weights {weight_difference:.1e}")
    assert len(differences) == 5 and max(differences) < LOSS_TOLERANCE
    assert weight_difference < WEIGHT_TOLERANCE


def token_file(tmp_path: Path) -> TokenFile:
    path = tmp_path / "train.bin"
    torch.arange(5000, dtype=torch.int32).numpy().astype("uint16").tofile(path)
    return TokenFile(path, "uint16")


def test_the_windows_of_a_step_are_the_same_whatever_the_number_of_processes(tmp_path):
    tokens = token_file(tmp_path)
    alone = WindowStream(tokens, 8, 16).next(state(0)).x
    shares = [WindowStream(tokens, 4, 16, rank, 2).next(state(0)).x for rank in (0, 1)]
    assert torch.equal(alone, torch.cat(shares))
    special = {"cls": 5001, "sep": 5002, "mask": 5003, "pad": 5004, "eot": 0}
    masked_alone = MaskedWindowStream(tokens, 8, 16, special, 5005).next(state(0))
    masked = [MaskedWindowStream(tokens, 4, 16, special, 5005, rank, 2).next(state(0)) for rank in (0, 1)]
    assert torch.equal(masked_alone.x, torch.cat([batch.x for batch in masked]))
    assert torch.equal(masked_alone.y, torch.cat([batch.y for batch in masked]))


def state(seed: int) -> TrainingState:
    position = TrainingState()
    position.data_generator.manual_seed(seed)
    return position


# ---- several machines ---------------------------------------------------------------------------------------------
def test_several_machines_go_through_accelerate_launch_with_the_main_address(studio_home, tmp_path):
    config = tiny_config({"train.num_processes": 2, "train.num_machines": 2, "train.machine_rank": 1})
    config.train.main_address, config.train.main_port = "10.0.0.7", 29501
    command, _ = trainer_command(tmp_path, config, None)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    options = launch_options(command[: command.index("studio.train") - 1])
    assert options["--num_processes"] == "4"  # Accelerate counts every machine's processes
    assert options["--num_machines"] == "2" and options["--machine_rank"] == "1"
    assert options["--main_process_ip"] == "10.0.0.7" and options["--main_process_port"] == "29501"
    alone, _ = trainer_command(tmp_path, tiny_config(), None)
    assert "accelerate.commands.launch" not in alone


def launch_options(launch: list[str]) -> dict[str, str]:
    """The `--option value` pairs of an `accelerate launch` command (flags such as --multi_gpu left out)."""
    words = launch[3:]
    pairs = zip(words, [*words[1:], "--"])
    return {word: value for word, value in pairs if word.startswith("--") and not value.startswith("--")}


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_machines_on_this_host_train_together_each_with_a_whole_run_folder(tmp_path, code_corpus, sharding):
    """Two `llm-studio train` commands, each with its own home and --machine-rank, meet at the main address
    (this host): one run of world size 2, and each machine's folder holds its events and usable checkpoints (under
    FSDP, each machine's first process gathers the whole weights for its own folder)."""
    options = ["--preset", "tiny", "--tokenizer", "char", "--data", str(code_corpus), *tiny_settings(), "--name", "mn"]
    options += ["--sharding", sharding]
    options += [word for key, value in {**EQUIVALENCE, "train.max_steps": 4, "train.eval_interval": 4}.items()
                for word in ("--set", f"{key}={value}")]  # fmt: skip
    options += ["--num-machines", "2", "--main-address", "127.0.0.1", "--main-port", str(free_port())]
    homes = [tmp_path / f"machine{rank}" for rank in (0, 1)]
    machines = [
        subprocess.Popen(
            [sys.executable, "-m", "studio.cli", "train", *options, "--machine-rank", str(rank)],
            env={**os.environ, "LLM_STUDIO_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank, home in enumerate(homes)
    ]
    outputs = [machine.communicate(timeout=240)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs
    folders = [home / "runs" / "mn" for home in homes]
    histories = [read_events(folder / EVENTS) for folder in folders]
    assert all(next(e for e in events if e.get("state") == "running")["world_size"] == 2 for events in histories)
    assert curves(folders[0]) == curves(folders[1])  # every machine reports the same reduced figures
    assert largest_difference(weights(folders[0]), weights(folders[1])) == 0.0
    for rank, folder in enumerate(folders):  # each machine keeps the random streams of its own processes
        assert (find_checkpoint(folder) / f"rng-rank{rank}.safetensors").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--num-machines", "2", "--machine-rank", "1"], "--main-address"),
        (["--num-machines", "2", "--machine-rank", "2", "--main-address", "h"], "machine_rank 2"),
        (["--num-machines", "2", "--main-address", "h", "--main-port", "70000"], "main_port 70000"),
        (["--num-machines", "0"], "num_machines"),
        (["--global-batch", "12"], "global_batch 12"),
        (["--sharding", "fsdp"], "--num-processes 2"),
        (["--sharding", "fsdp", "--num-processes", "2", "--set", "train.optimizer=muon"], "Muon"),
        (["--sharding", "fsdp", "--num-processes", "2", "--method", "qlora"], "4-bit"),
    ],
)
def test_bad_machine_and_batch_values_are_one_line(run_cli, options, named):
    code, out, err = run_cli("train", "--preset", "tiny", "--data", "nothing-here", *options)
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1, err
    assert not run_path("x").parent.exists() or not any(run_path("x").parent.iterdir())  # no run was made
