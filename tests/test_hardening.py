"""Damaged, hostile or concurrent input never costs a run, a file outside the home, or a traceback."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from studio.errors import StudioError
from studio.export.huggingface import final_metrics
from studio.inference.load import load_model
from studio.paths import child_process_env
from studio.run_folder.events import EventWriter, current_history, format_event, read_event_lines, read_events
from studio.run_folder.layout import find_checkpoint, latest_checkpoint, list_checkpoint_steps, run_path
from studio.run_folder.lock import is_locked, try_lock
from studio.run_folder.status import list_runs, summarize
from studio.run_folder.watch import RunWatcher
from studio.runs.control import launch, stop_run, wait_for_exit
from studio.runs.prepare import prepare_run
from tests.helpers import TINY_TRAIN, fixture_events, tiny_config, write_fixture_run


# ---- readers that survive anything ------------------------------------------------------------------
def random_json(rng: random.Random, depth: int = 0):
    """Any JSON value: scalars, lists, objects, and objects that look like events with fields of any type."""
    scalars = [None, True, False, 0, -1, 2**40, 1.5, float("nan"), "", "train", "x" * rng.randint(0, 50)]
    roll = rng.random()
    if depth > 2 or roll < 0.3:
        return rng.choice(scalars)
    if roll < 0.45:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.6:
        return {rng.choice(["a", "kind", "step", "t"]): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    kind = rng.choice(["train", "eval", "checkpoint", "status", "error", "sample", "bogus"])
    fields = ["loss", "lr", "grad_norm", "tokens_per_s", "tokens_seen", "mfu", "val_loss", "val_ppl", "val_acc",
              "path", "state", "message", "samples", "max_steps", "t", "mem_peak"]  # fmt: skip
    event = {"kind": kind, "step": rng.choice([0, 5, -3, "7", 2.5, None, True])}
    event.update((rng.choice(fields), random_json(rng, depth + 1)) for _ in range(rng.randint(0, 6)))
    return event


def junk_line(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))).replace(b"\n", b" ")
    return json.dumps(random_json(rng)).encode()


def test_event_readers_survive_any_line_and_read_every_real_event(studio_home):
    rng = random.Random(0)
    real = fixture_events()
    run_dir = write_fixture_run("noisy", events=[])
    lines = []
    for event in real:
        lines += [junk_line(rng) for _ in range(rng.randint(0, 3))]
        lines.append(json.dumps(event).encode())
    (run_dir / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    events, _, skipped = read_event_lines(run_dir / "events.jsonl")
    real_read = [event for event in events if event in real]
    assert real_read == real  # every real event, in order
    assert skipped + len(events) == sum(1 for line in lines if line.strip())
    for event in events:
        format_event(event)
    current_history(events)
    final_metrics(run_dir)
    [summary] = list_runs()
    assert summary.status in ("finished", "crashed", "stopped", "failed", "created")
    watcher = RunWatcher(run_dir)
    watcher.poll()
    view = watcher.view()
    last_train = [event for event in real if event["kind"] == "train"][-1]
    assert view.series["loss"].values[-1] == last_train["loss"] and view.skipped_lines == skipped


def test_a_damaged_run_is_listed_as_damaged_and_the_others_still_are(studio_home, run_cli):
    write_fixture_run("good")
    bad = write_fixture_run("bad")
    (bad / "config.toml").write_text("[model\nthis is not toml", encoding="utf-8")
    code, out, err = run_cli("runs")
    assert code == 0
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {"good": "finished", "bad": "damaged"}
    assert "run bad is damaged: cannot read" in err


def test_a_writer_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "train", "st', encoding="utf-8")
    writer = EventWriter(path)
    writer.write("status", 1, state="stopped")
    writer.close()
    assert [(e["kind"], e["step"]) for e in read_events(path)] == [("train", 1), ("status", 1)]


# ---- names are names --------------------------------------------------------------------------------
def test_commands_take_names_not_paths_and_touch_nothing_outside_the_home(studio_home, run_cli, tmp_path):
    outside = tmp_path / "somewhere"
    outside.mkdir()
    (outside / "config.toml").write_text("preset = 'tiny'\n", encoding="utf-8")
    relative = "../../" + outside.name  # from runs/, two levels up is tmp_path
    for target in (relative, str(outside), ".hidden", "a/b"):
        for command in (["delete", target, "--yes"], ["stop", target], ["resume", target]):
            code, out, err = run_cli(*command)
            assert code == 2 and "run name" in err and "is not allowed" in err, (command, err)
    code, _, err = run_cli("prepare", "python-stdlib", "--name", "../escape")
    assert code == 2 and "dataset name '../escape' is not allowed" in err
    assert (outside / "config.toml").is_file()


# ---- one trainer per run ------------------------------------------------------------------------------
def trainer_processes(run_dir) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "studio.train" in cmdline and str(run_dir) in cmdline:
            found.append(process)
    return found


@pytest.mark.slow
def test_two_resumes_started_together_start_one_trainer_and_stop_stops_it(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "twice", "--max-steps", 20)
    assert code == 0, err
    run_dir = run_path("twice")
    command = [sys.executable, "-m", "studio.cli", "resume", "twice", "--max-steps", "100000", "--detach"]
    resumes = [subprocess.Popen(command, env=child_process_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]  # fmt: skip
    outcomes = [(process.wait(timeout=60), process.stderr.read()) for process in resumes]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    refused = next(err for code, err in outcomes if code == 2)
    assert "already training" in refused or "still running" in refused
    assert len(trainer_processes(run_dir)) == 1
    with pytest.raises(StudioError, match="already training"):  # the lock itself, whatever the status says
        launch(run_dir, find_checkpoint(run_dir))
    code, out, _ = run_cli("stop", "twice")
    assert code == 0 and "stopped" in out
    assert trainer_processes(run_dir) == [] and not is_locked(run_dir)
    steps = list_checkpoint_steps(run_dir)
    time.sleep(1.0)
    assert list_checkpoint_steps(run_dir) == steps  # nobody writes checkpoints any more


@pytest.mark.slow
def test_delete_is_refused_while_the_lock_is_held(run_cli, code_corpus):
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "held", "--max-steps", 5)
    assert code == 0, err
    run_dir = run_path("held")
    lock = try_lock(run_dir)  # as a trainer holds it
    try:
        code, _, err = run_cli("delete", "held", "--yes")
        assert code == 2 and "still training" in err and run_dir.is_dir()
    finally:
        os.close(lock)
    code, _, err = run_cli("delete", "held", "--yes")
    assert code == 0 and not run_dir.exists()


# ---- checkpoints you can choose, and a fallback; verify before allocating --------------------------------
def train_two_checkpoints(run_cli, corpus, name: str) -> Path:
    code, _, err = run_cli("train", *TINY_TRAIN, "--data", corpus, "--name", name, "--max-steps", 20,
                           "--set", "train.checkpoint_interval=10")  # fmt: skip
    assert code == 0, err
    return run_path(name)


def rewrite_weights_metadata(checkpoint: Path, **changes: str) -> None:
    path = checkpoint / "model.safetensors"
    with safe_open(str(path), framework="numpy") as file:
        tensors = {name: file.get_tensor(name) for name in file.keys()}
        metadata = {**(file.metadata() or {}), **changes}
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.slow
def test_a_state_of_another_step_is_refused_and_resume_falls_back_saying_so(run_cli, code_corpus):
    run_dir = train_two_checkpoints(run_cli, code_corpus, "state")
    state_file = run_dir / "checkpoints" / "step-0000020" / "trainer_state.json"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "step": 0}))
    code, out, err = run_cli("resume", "state", "--max-steps", 30)
    assert code == 0, err
    assert "note: checkpoint step-0000020 (its trainer_state.json says step 0, its folder step 20) cannot be " \
           "used; using step-0000010" in err  # fmt: skip
    resumed = [e for e in read_events(run_dir / "events.jsonl") if e.get("state") == "resumed"]
    assert [e["step"] for e in resumed] == [10]  # not 0: nothing of the run was overwritten from step 0
    code, _, err = run_cli("resume", "state", "--checkpoint", 5)
    assert code == 2 and "no checkpoint at step 5" in err


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_passed_over_by_generation_and_refused_when_chosen(run_cli, code_corpus):
    run_dir = train_two_checkpoints(run_cli, code_corpus, "dmg")
    (run_dir / "checkpoints" / "step-0000020" / "model.safetensors").write_bytes(b"\x00broken" * 4)
    code, out, err = run_cli("generate", "dmg", "--prompt", "def ", "--max-new-tokens", 4, "--seed", 1)
    assert code == 0, err
    assert err.startswith("note: checkpoint step-0000020 (model.safetensors is unreadable or corrupt")
    assert err.strip().endswith("using step-0000010")
    code, _, err = run_cli("generate", "dmg", "--prompt", "x", "--checkpoint", 20)
    assert code == 2 and err.count("\n") == 1 and "checkpoint step-0000020 of run dmg cannot be used" in err
    code, _, err = run_cli("resume", "dmg", "--checkpoint", 10, "--max-steps", 12)
    assert code == 0, err  # chosen: no note
    assert "note:" not in err


@pytest.mark.slow
def test_metadata_that_names_a_larger_model_is_refused_before_anything_is_built(run_cli, code_corpus, tmp_path):
    run_dir = train_two_checkpoints(run_cli, code_corpus, "liar")
    for step in (10, 20):
        checkpoint = run_dir / "checkpoints" / f"step-{step:07d}"
        config = json.loads(safe_open(str(checkpoint / "model.safetensors"), framework="numpy").metadata()["config"])
        config["model"]["n_embd"] = 1 << 20
        rewrite_weights_metadata(checkpoint, config=json.dumps(config))
    for command in (["generate", "liar", "--prompt", "x"], ["export", "liar", "--out", tmp_path / "out"]):
        code, _, err = run_cli(*command)
        assert code == 2 and err.count("\n") == 1, err
        assert "no usable checkpoint" in err and "where the model of its config has" in err
    assert not (tmp_path / "out").exists()  # export checks before it writes


@pytest.mark.slow
def test_only_step_names_are_checkpoints_and_an_empty_latest_is_passed_over(run_cli, code_corpus, tmp_path):
    run_dir = train_two_checkpoints(run_cli, code_corpus, "odd")
    checkpoints = run_dir / "checkpoints"
    backup = checkpoints / "step-0000010 backup"
    shutil.copytree(checkpoints / "step-0000010", backup)  # the user's copy: not a checkpoint, never pruned
    (checkpoints / "latest").write_text("")
    code, _, err = run_cli("generate", "odd", "--prompt", "def ", "--max-new-tokens", 4, "--seed", 1)
    assert code == 0, err
    code, _, err = run_cli("export", "odd", "--out", tmp_path / "out")
    assert code == 0, err
    code, _, err = run_cli("resume", "odd", "--max-steps", 22)
    assert code == 0, err
    resumed = [e for e in read_events(run_dir / "events.jsonl") if e.get("state") == "resumed"]
    assert [e["step"] for e in resumed] == [20]  # the newest by name, when `latest` names none
    assert list_checkpoint_steps(run_dir) == [10, 20, 22] and backup.is_dir()  # keep 3: the copy is not one


@pytest.mark.slow
def test_the_newest_checkpoint_loads_while_the_run_saves_and_prunes_one_every_step(studio_home, code_corpus):
    changes = {"data.source": str(code_corpus), "train.max_steps": 100_000, "train.checkpoint_interval": 1}
    run_dir = prepare_run(tiny_config({**changes, "train.keep_checkpoints": 1}), "busy")
    launch(run_dir)
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(run_dir) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        steps: list[int] = []
        while len(steps) < 30 or len(set(steps)) < 10:  # a few dozen loads, over at least 10 saves (and prunes)
            assert time.monotonic() < deadline + 60, steps
            steps.append(int(load_model("busy", use="generate").description.rsplit(" ", 1)[1]))
    finally:
        stop_run(run_dir)


def test_weights_that_do_not_fit_their_config_or_the_memory_are_refused(tmp_path, monkeypatch):
    from safetensors.torch import save_file as save_torch

    from studio.config import ModelConfig
    from studio.model import build_model
    from studio.model.weights import check_fit, weights_to_save

    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=50)
    weights = weights_to_save(build_model(cfg), cfg.tie_embeddings)
    renamed = {name.replace("layers.1.", "layers.2."): tensor for name, tensor in weights.items()}
    save_torch({k: v.contiguous() for k, v in renamed.items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(
        StudioError,
        match="do not fit the model of its config: model.layers.1.input_layernorm.weight is missing in the file",
    ):
        check_fit(cfg, tmp_path / "model.safetensors")
    save_torch({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "model.safetensors"))
    check_fit(cfg, tmp_path / "model.safetensors")
    monkeypatch.setattr("psutil.virtual_memory", lambda: type("Memory", (), {"available": 1000})())
    with pytest.raises(StudioError, match="needs about .* of memory, 1000 B is available"):
        check_fit(cfg, tmp_path / "model.safetensors")


# ---- early signals ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_sigterm_while_the_trainer_starts_ends_the_run_as_stopped(studio_home, code_corpus):
    run_dir = prepare_run(tiny_config({"data.source": str(code_corpus), "train.max_steps": 50}), "early")
    pid = launch(run_dir)
    time.sleep(0.3)  # the trainer is importing torch
    os.killpg(pid, signal.SIGTERM)
    assert wait_for_exit(run_dir, 60)
    assert summarize(run_dir).status == "stopped"
    assert "SIGTERM received" in (run_dir / "trainer.log").read_text()


# ---- runaway inputs -------------------------------------------------------------------------------------
PREPARE_AND_REPORT_PEAK = """
import sys
from studio.config import DataConfig
from studio.data.prepare import prepare_dataset
from studio.hardware import peak_resident_bytes
dataset = prepare_dataset(DataConfig(source=sys.argv[1], vocab_size=1024))
print(dataset.vocab_size, peak_resident_bytes() // 2**20)
"""  # VmHWM, the child's own: ru_maxrss carries a large parent's (a long test session's) over fork and exec


@pytest.mark.slow
def test_a_corpus_that_is_one_long_word_trains_a_bpe_in_bounded_memory(studio_home, tmp_path):
    rng = random.Random(0)
    corpus = tmp_path / "one-word.txt"  # 12 MB of letters, no whitespace, no line break: one pre-token once
    corpus.write_text("".join(rng.choices("ACGT", k=12_000_000)), encoding="ascii")
    result = subprocess.run([sys.executable, "-c", PREPARE_AND_REPORT_PEAK, str(corpus)], capture_output=True,
                            text=True, env=child_process_env(), timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    vocab, peak_mb = map(int, result.stdout.split())
    assert vocab == 1024 and peak_mb < 1500, peak_mb


# ---- operating-system errors, and what interrupted work leaves behind ------------------------------------------
def test_a_home_that_is_a_file_is_one_line(tmp_path, monkeypatch, run_cli):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("LLM_STUDIO_HOME", str(home))
    for command in (["runs"], ["prepare", "python-stdlib"], ["delete", "x", "--yes"]):
        code, _, err = run_cli(*command)
        assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, err


def test_a_full_disk_or_a_denied_folder_is_one_line(run_cli, code_corpus, monkeypatch):
    import studio.data.prepare

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/train.bin")

    monkeypatch.setattr(studio.data.prepare, "_write_dataset", full_disk)
    code, _, err = run_cli("prepare", code_corpus)
    assert code == 2 and err.count("\n") == 1
    assert "No space left on device on /somewhere/train.bin; the disk is full" in err

    def denied(*args, **kwargs):  # these tests run as root, whom no permission stops: the error is raised
        raise PermissionError(errno.EACCES, "Permission denied", "/home/someone/.llm-studio/datasets")

    monkeypatch.setattr(studio.data.prepare, "_write_dataset", denied)
    code, _, err = run_cli("prepare", code_corpus, "--tokenizer", "char")
    assert code == 2 and err.count("\n") == 1
    assert "Permission denied on /home/someone/.llm-studio/datasets; check its permissions" in err


def test_leftovers_of_interrupted_work_go_when_nothing_writes_them(studio_home, run_cli):
    run_dir = write_fixture_run("left")
    abandoned = [studio_home / "datasets" / ".tmp-corpus-char-999999", run_dir / "checkpoints" / ".tmp-step-0000005"]
    alive = studio_home / "datasets" / f".tmp-other-char-{os.getpid()}"  # a prepare still running
    for folder in [*abandoned, alive]:
        folder.mkdir(parents=True)
        (folder / "train.bin").write_bytes(b"\0" * 10)
    code, _, _ = run_cli("runs")
    assert code == 0
    assert not any(folder.exists() for folder in abandoned) and alive.is_dir()


def test_a_checkpoint_that_fails_half_way_leaves_no_folder_behind(studio_home, code_corpus, monkeypatch):
    from studio.checkpoints import files as checkpoint
    from studio.train.trainer import Trainer

    config = tiny_config({"data.source": str(code_corpus), "train.sample_interval": 0})
    trainer = Trainer(prepare_run(config, "full"))
    trainer.state.step = 3

    def full_disk(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_save", full_disk)
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    assert list((run_path("full") / "checkpoints").iterdir()) == []
