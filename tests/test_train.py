"""End to end on the CPU: real trainer processes writing real run folders, driven through the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from studio.run_folder.events import current_history, read_events
from studio.run_folder.layout import find_checkpoint, read_config, run_path
from studio.run_folder.status import summarize, trainer_pid
from studio.runs.control import request_checkpoint, wait_for_exit
from tests.helpers import TINY_TRAIN, tiny_config

pytestmark = pytest.mark.slow  # every test here starts trainer processes


def events_of(name: str, kind: str) -> list[dict]:
    return [e for e in current_history(read_events(run_path(name) / "events.jsonl")) if e["kind"] == kind]


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_short_run_learns_and_leaves_a_complete_run_folder(run_cli, code_corpus):
    code, out, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "r1",
        "--max-steps",
        60,
        "--set",
        "train.checkpoint_interval=30",
        "--set",
        "train.lr=1e-2",
    )
    assert code == 0, err
    assert "finished" in out
    folder = run_path("r1")
    assert {"config.toml", "events.jsonl", "checkpoints", "trainer.log", "pid"} <= {p.name for p in folder.iterdir()}
    assert (folder / "checkpoints" / "latest").read_text() == "step-0000060"
    evals = events_of("r1", "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0  # from ln(vocab) to far below
    train = events_of("r1", "train")
    assert [e["step"] for e in train] == list(range(5, 61, 5))
    for event in train:
        assert event["tokens_per_s"] > 0 and event["lr"] > 0 and event["grad_norm"] > 0 and event["mfu"] > 0
    samples = events_of("r1", "sample")
    assert [e["step"] for e in samples] == [0, 20, 40, 60]
    assert [s["prompt"] for s in samples[-1]["samples"]] == ["\n", "def ", "The "]
    assert summarize(folder).status == "finished"
    log = (folder / "trainer.log").read_text()  # the trainer's own account: the lines `train` prints as it follows
    assert "step     60  loss" in log and "step     60  finished" in log


def test_resume_continues_exactly_where_the_uninterrupted_run_went(run_cli, code_corpus):
    """Run A trains 40 steps. Run B is A's folder rolled back to A's step-20 checkpoint, then resumed:
    its losses from step 25 on must equal A's (same seed, same data order, dropout on)."""
    args = [
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--max-steps",
        40,
        "--set",
        "train.checkpoint_interval=20",
        "--set",
        "model.dropout=0.1",
        "--set",
        "train.keep_checkpoints=5",
    ]
    code, _, err = run_cli("train", *args, "--name", "a")
    assert code == 0, err
    shutil.copytree(run_path("a"), run_path("b"))
    b = run_path("b")
    shutil.rmtree(b / "checkpoints" / "step-0000040")
    (b / "checkpoints" / "latest").write_text("step-0000020")
    code, out, err = run_cli("resume", "b")
    assert code == 0, err
    losses_a = {e["step"]: e["loss"] for e in events_of("a", "train") if e["step"] > 20}
    losses_b = {e["step"]: e["loss"] for e in events_of("b", "train") if e["step"] > 20}
    assert losses_a.keys() == losses_b.keys() == {25, 30, 35, 40}
    for step in losses_a:
        assert losses_b[step] == pytest.approx(losses_a[step], abs=1e-5)
    val_a, val_b = events_of("a", "eval")[-1], events_of("b", "eval")[-1]
    assert val_b["val_loss"] == pytest.approx(val_a["val_loss"], abs=1e-5)


def test_two_processes_really_run_with_the_one_process_schedule_and_stop_together(run_cli, code_corpus):
    code, _, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "ddp",
        "--max-steps",
        100000,
        "--num-processes",
        2,
        "--set",
        "train.warmup_steps=100",
        "--detach",
    )
    assert code == 0, err
    folder = run_path("ddp")
    wait_until(lambda: len(events_of("ddp", "train")) >= 3, what="both ranks to train")
    running = next(e for e in read_events(folder / "events.jsonl") if e.get("state") == "running")
    assert running["world_size"] == 2
    code, out, _ = run_cli("stop", "ddp")
    assert code == 0 and "stopped" in out
    from studio.config import RunConfig
    from studio.train.schedule import lr_at

    train_config = RunConfig.load(folder / "config.toml").train
    for event in events_of("ddp", "train"):  # the schedule advances once per optimizer step, not per process
        assert event["lr"] == pytest.approx(lr_at(event["step"] - 1, train_config))
    checkpoint = find_checkpoint(folder)
    assert checkpoint.name == f"step-{events_of('ddp', 'status')[-1]['step']:07d}"
    assert (checkpoint / "rng-rank0.safetensors").exists() and (checkpoint / "rng-rank1.safetensors").exists()
    assert "Traceback" not in (folder / "trainer.log").read_text()


def test_detach_returns_at_once_and_stop_checkpoints_then_exits(run_cli, code_corpus):
    started = time.monotonic()
    code, out, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "bg",
        "--max-steps",
        100000,
        "--set",
        "train.checkpoint_interval=100000",
        "--detach",
    )
    assert code == 0, err
    assert "background" in out
    folder = run_path("bg")
    assert trainer_pid(folder) is not None
    wait_until(lambda: len(events_of("bg", "train")) >= 2, what="training to start")
    assert summarize(folder).status == "running"
    assert time.monotonic() - started < 30
    request_checkpoint(folder)  # "checkpoint now": saved at the next step, the request file consumed
    wait_until(lambda: events_of("bg", "checkpoint"), what="the requested checkpoint")
    assert not (folder / "CHECKPOINT").exists()
    code, out, _ = run_cli("stop", "bg")
    assert code == 0 and "stopped" in out
    assert trainer_pid(folder) is None
    last_step = events_of("bg", "status")[-1]["step"]
    assert find_checkpoint(folder).name == f"step-{last_step:07d}"


def test_a_killed_trainer_shows_as_crashed(run_cli, code_corpus):
    code, _, err = run_cli(
        "train", *TINY_TRAIN, "--data", code_corpus, "--name", "victim", "--max-steps", 100000, "--detach"
    )
    assert code == 0, err
    folder = run_path("victim")
    wait_until(lambda: events_of("victim", "train"), what="training to start")
    os.killpg(trainer_pid(folder), signal.SIGKILL)
    wait_for_exit(folder, 10)
    summary = summarize(folder)
    assert summary.status == "crashed"
    assert summary.error.startswith(f"the trainer ended at step {summary.step} without a word")  # far from the RAM
    code, out, _ = run_cli("runs")
    assert "victim" in out and "crashed" in out


KILL_DURING_SECOND_CHECKPOINT = textwrap.dedent("""
    import sys, time
    from studio.checkpoints import files as checkpoint
    from studio.train import trainer as worker
    saved = []
    original = checkpoint._save
    def slow_save(tensors, path, metadata=None):
        original(tensors, path, metadata)
        if path.name == "model.safetensors":
            saved.append(path)
            if len(saved) == 2:  # half-way through the second checkpoint: wait to be killed
                print("WRITING", path.parent, flush=True)
                time.sleep(600)
    checkpoint._save = slow_save
    sys.exit(worker.main(sys.argv[1:]))
""")


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(run_cli, code_corpus, tmp_path):
    code, _, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "k",
        "--max-steps",
        20,
        "--set",
        "train.checkpoint_interval=10",
    )
    assert code == 0, err
    folder = run_path("k")
    shutil.rmtree(folder / "checkpoints")  # start over in the same folder, with a trainer we can kill mid-write
    (folder / "events.jsonl").unlink()
    script = tmp_path / "slow_worker.py"
    script.write_text(KILL_DURING_SECOND_CHECKPOINT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )
    line = process.stdout.readline()
    assert line.startswith("WRITING"), line
    assert ".tmp-step-0000020" in line
    process.kill()
    process.wait()
    assert find_checkpoint(folder).name == "step-0000010"
    from studio.checkpoints.files import read_weights

    weights, metadata = read_weights(find_checkpoint(folder))
    assert metadata.step == 10 and weights
    code, out, err = run_cli("resume", "k")
    assert code == 0, err
    assert find_checkpoint(folder).name == "step-0000020"
    assert events_of("k", "status")[-1]["state"] == "finished"


def test_a_corrupt_checkpoint_is_one_line_not_a_traceback(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "c", "--max-steps", 10)
    assert code == 0, err
    weights = run_path("c") / "checkpoints" / "step-0000010" / "model.safetensors"
    weights.write_bytes(b"\x00garbage" * 10)
    code, out, err = run_cli("resume", "c", "--max-steps", 20)
    assert code == 2
    assert err.count("\n") == 1 and "corrupt" in err and "step-0000010" in err
    assert summarize(run_path("c")).status == "finished"  # nothing was launched, nothing lost
    from studio.checkpoints.files import read_weights
    from studio.errors import StudioError

    with pytest.raises(StudioError, match="corrupt"):
        read_weights(weights.parent)


def test_config_toml_and_events_are_plain_files(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "p", "--max-steps", 5)
    assert code == 0, err
    text = (run_path("p") / "config.toml").read_text()
    assert "[model]" in text and "[train]" in text and 'dataset = "corpus-char' in text
    for line in (run_path("p") / "events.jsonl").read_text().splitlines():
        assert json.loads(line)["kind"] in ("train", "eval", "checkpoint", "status", "error", "sample")


@pytest.mark.parametrize(
    "extra, check",
    [
        (["--set", "train.optimizer=sgd", "--set", "train.momentum=0.9"], "momentum_buffer"),
        (["--set", "train.optimizer=muon", "--set", "model.arch=gpt2"], "momentum_buffer"),
        (["--set", "train.grad_accum=2"], "exp_avg"),
        (["--mixed-precision", "bf16"], "exp_avg"),
        (["--set", "model.arch=gpt2", "--set", "model.bias=true"], "exp_avg"),
        (["--set", "model.arch=lstm", "--set", "train.schedule=wsd"], "exp_avg"),
        (["--set", "model.arch=rnn", "--set", "train.schedule=inverse_time"], "exp_avg"),
    ],
)
def test_optimizers_precisions_and_architectures_train_and_checkpoint(run_cli, code_corpus, extra, check):
    code, _, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "v",
        "--max-steps",
        6,
        "--set",
        "train.log_interval=3",
        *extra,
    )
    assert code == 0, err
    from safetensors import safe_open

    with safe_open(str(find_checkpoint(run_path("v")) / "optimizer.safetensors"), framework="pt") as file:
        keys = list(file.keys())
        assert any(key.endswith(check) for key in keys), keys
        if check == "exp_avg":  # one AdamW update per optimizer step, whatever the accumulation
            assert float(file.get_tensor(next(k for k in keys if k.endswith(".step")))) == 6
    train = events_of("v", "train")
    assert [e["step"] for e in train] == [3, 6] and all(e["loss"] > 0 for e in train)
    accumulation = 2 if "train.grad_accum=2" in extra else 1
    assert train[-1]["tokens_seen"] == 6 * 8 * 32 * accumulation


def test_compile_trains_and_saves_plain_weight_names(run_cli, code_corpus):
    code, _, err = run_cli(
        "train",
        *TINY_TRAIN,
        "--data",
        code_corpus,
        "--name",
        "compiled",
        "--max-steps",
        10,
        "--set",
        "model.n_layer=1",
        "--compile",
        "true",
    )
    assert code == 0, err
    from studio.checkpoints.files import read_weights

    weights, metadata = read_weights(find_checkpoint(run_path("compiled")))
    assert "model.embed_tokens.weight" in weights and not any("_orig_mod" in key for key in weights)
    assert metadata.config.train.compile == "true"


def test_a_stop_between_two_log_lines_still_counts_the_training_time(studio_home, code_corpus):
    """The trainer in this process: stopped at step 3 of a run that logs every 1000 steps, its saved state
    holds the seconds those three steps took."""
    from studio.runs.prepare import prepare_run
    from studio.train.trainer import Trainer

    config = tiny_config({"data.source": str(code_corpus), "train.log_interval": 1000, "train.sample_interval": 0})
    trainer = Trainer(prepare_run(config, "timed"))
    trainer.poll_requests = lambda: (trainer.state.step >= 3, False)  # as if `stop` came at step 3
    trainer.run()
    saved = json.loads((find_checkpoint(run_path("timed")) / "trainer_state.json").read_text())
    assert saved["step"] == 3 and saved["train_seconds"] > 0
    assert events_of("timed", "train") == []  # no log line was written: the time still counts


def test_a_run_without_a_validation_split_skips_evaluation_with_a_note(studio_home, code_corpus, run_cli, tmp_path):
    """data.val_fraction 0: every token trains, the trainer says once that it does not evaluate, and `runs`, the
    dashboard's history and a report read a run that has no eval event."""
    from studio.data.prepare import open_dataset
    from studio.runs.prepare import prepare_run
    from studio.train.trainer import Trainer

    changes = {"data.source": str(code_corpus), "data.val_fraction": 0.0, "train.max_steps": 4}
    run_dir = prepare_run(tiny_config(changes | {"train.eval_interval": 2, "train.sample_interval": 0}), "whole")
    dataset = open_dataset(read_config(run_dir).data.dataset)
    assert dataset.meta.tokens["val"] == 0 and dataset.meta.held_out().startswith("nothing: everything trains")
    Trainer(run_dir).run()
    assert events_of("whole", "eval") == []
    (note,) = events_of("whole", "note")
    assert note["step"] == 0 and note["message"].startswith("no validation split (data.val_fraction 0")
    assert summarize(run_dir).status == "finished"
    code, out, err = run_cli("runs")
    assert code == 0 and "whole" in out, err
    code, _, err = run_cli("report", "whole", "--out", tmp_path / "page")
    assert code == 0 and (tmp_path / "page" / "index.html").is_file(), err
