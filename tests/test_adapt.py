"""Adapting Hugging Face checkpoints of every family the studio is tested with: full fine-tuning and LoRA fall in
loss and export to folders that plain transformers reloads with the same logits; the loss is normalised per token
across accumulation; resume is exact; packing changes nothing but speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from studio.checkpoints.training_state import TrainingState
from studio.config import RunConfig, set_field
from studio.data.batches import ExampleFile, ExampleStream
from studio.data.prepare import open_dataset
from studio.export.huggingface import export_run
from studio.inference.generate import load_generator
from studio.model.trainable import build_run_model
from studio.run_folder.layout import EVENTS, find_checkpoint, run_path
from studio.runs.prepare import prepare_run
from studio.train.trainer import Trainer
from tests.hf_models import CHATML, FAMILIES, TEXT, make_hf_model

# trains models, in this process (no trainer start-up, no inspection child) but for seconds
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("inspection_in_process")]

transformers = pytest.importorskip("transformers")

QUICK = {
    "model.block_size": 32,
    "train.batch_size": 4,
    "train.max_steps": 8,
    "train.lr": 3e-3,
    "train.min_lr": 0.0,
    "train.warmup_steps": 0,
    "train.schedule": "constant",
    "train.weight_decay": 0.0,
    "train.log_interval": 1,
    "train.eval_interval": 100,
    "train.eval_steps": 1,
    "train.sample_interval": 0,
    "train.checkpoint_interval": 100,
}


HOLD_ONE_OUT = {"data.val_fraction": 0.2}  # of the 5 conversations context 32 keeps, the last (two rows hold the rest)


def adapt_config(folder: Path, data: Path, changes: dict | None = None) -> RunConfig:
    config = RunConfig()
    config.data.source = str(data)
    config.train.init_from = str(folder)
    for key, value in {**QUICK, **(changes or {})}.items():
        set_field(config, key, value)
    return config


def train_in_process(config: RunConfig, name: str, resume_step: int | None = None) -> Path:
    """What `llm-studio train` does, with the trainer in this process: seconds saved on every run."""
    run_dir = run_path(name) if resume_step is not None else prepare_run(config, name)
    Trainer(run_dir, resume_step).run()
    return run_dir


def straight_and_resumed(config: RunConfig, stop_at: int) -> tuple[Path, Path]:
    """Run `straight` trains config's steps in one go; run `halves` stops at `stop_at` and resumes to the end. Both
    end with bit-identical weights and the same losses after `stop_at` (asserted); their folders are returned."""
    steps, stopped = config.train.max_steps, config.copy()
    straight = train_in_process(config, "straight")
    stopped.train.max_steps = stop_at
    halves = train_in_process(stopped, "halves")
    config_path = halves / "config.toml"
    config_path.write_text(config_path.read_text().replace(f"max_steps = {stop_at}", f"max_steps = {steps}"))
    train_in_process(RunConfig.load(config_path), "halves", resume_step=stop_at)
    expected = load_file(find_checkpoint(straight) / "model.safetensors")
    resumed = load_file(find_checkpoint(halves) / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    assert losses(straight)[stop_at:] == losses(halves)[stop_at:]
    return straight, halves


def losses(run_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines()]
    return [event["loss"] for event in events if event["kind"] == "train"]


def logit_gap(run: str, reloaded: torch.nn.Module, text: str) -> float:
    """The largest difference between the logits of a model reloaded from an export (by transformers, or peft on
    its base) and those of the studio's own loaded model of the run, on `text`."""
    trained = load_generator(run)
    ids = torch.tensor([trained.encode(text)])
    with torch.no_grad():
        return (reloaded(input_ids=ids).logits - trained.model(ids)[0]).abs().max().item()


@pytest.fixture
def code_text(tmp_path) -> Path:
    path = tmp_path / "code.txt"
    path.write_text(TEXT * 80, encoding="utf-8")
    return path


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fine_tunes_and_exports_to_plain_transformers(studio_home, tmp_path, code_text, family, method):
    folder = tmp_path / family
    make_hf_model(folder, family)
    lr = 3e-3 if method == "full" else 2e-2
    run_dir = train_in_process(adapt_config(folder, code_text, {"train.method": method, "train.lr": lr}), "ft")
    curve = losses(run_dir)
    assert curve[-1] < curve[0] - 0.2, curve

    out = tmp_path / "exported"
    result = export_run("ft", out)  # reloads the folder with transformers and compares logits itself
    assert result.max_logit_diff is not None and result.max_logit_diff < 1e-4
    weights = {}
    for shard in out.glob("*.safetensors"):
        weights |= load_file(shard)
    assert not [name for name in weights if "lora" in name]
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert logit_gap("ft", reloaded, "class Point:\n    x") < 1e-4
    assert (out / "generation_config.json").is_file() and (out / "tokenizer.json").is_file()
    if family == "llama" and method == "lora":  # evaluate judges the run, and its export, on held-out text
        from studio.config import DataConfig
        from studio.inference.evaluate import evaluate

        held_out = tmp_path / "held-out.txt"
        held_out.write_text("class Point:\n    x: int\n\ndef add(a, b):\n    return a + b\n" * 30)
        of_run, of_export = (evaluate(target, DataConfig(source=str(held_out))) for target in ("ft", str(out)))
        assert of_run.kind == of_export.kind == "causal"
        assert of_run.metrics["perplexity"] == pytest.approx(math.exp(of_run.metrics["loss"]), rel=1e-3)
        # the export is judged over windows of its own context (128 tokens), the run over its training context
        assert abs(of_run.metrics["loss"] - of_export.metrics["loss"]) < 0.1


def test_lora_adapter_exports_for_peft_on_its_base(studio_home, tmp_path, code_text):
    from peft import PeftModel

    folder = tmp_path / "qwen2"
    base = make_hf_model(folder, "qwen2")
    train_in_process(adapt_config(folder, code_text, {"train.method": "dora", "train.lr": 2e-2}), "dora")
    out = tmp_path / "adapter"
    export_run("dora", out, adapter=True)
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    adapted = PeftModel.from_pretrained(base, out).eval()
    assert logit_gap("dora", adapted, "def add") < 1e-5


def step_delta(
    name: str, folder: Path, data: Path, batch: int, accum: int, processes: int = 1
) -> dict[str, torch.Tensor]:
    """The change one SGD step (lr 1, no clipping, no momentum) makes: minus the gradient. Several processes
    train through the CLI (accelerate launch, gloo), one in this process."""
    changes = {"train.batch_size": batch, "train.grad_accum": accum, "train.max_steps": 1, "train.optimizer": "sgd"}
    changes |= {"train.lr": 1.0, "train.momentum": 0.0, "train.grad_clip": 0.0, "train.checkpoint_interval": 1}
    if processes == 1:
        run_dir = train_in_process(adapt_config(folder, data, changes), name)
    else:
        from studio.cli.main import main

        options = [word for key, value in {**QUICK, **changes}.items() for word in ("--set", f"{key}={value}")]
        command = ["train", "--init-from", str(folder), "--data", str(data), "--name", name]
        assert main([*command, *options, "--num-processes", str(processes)]) == 0
        run_dir = run_path(name)
    before = load_file(next(folder.glob("*.safetensors")))
    after = load_file(find_checkpoint(run_dir) / "model.safetensors")
    return {name: after[name] - before[name] for name in after}


def test_gradients_are_per_token_whatever_the_batch_accumulation_and_processes(studio_home, tmp_path, chat_rows):
    folder = tmp_path / "llama"
    make_hf_model(folder, "llama", chat_template=CHATML)
    whole = step_delta("b4a1", folder, chat_rows, batch=4, accum=1)
    split = step_delta("b1a4", folder, chat_rows, batch=1, accum=4)
    assert max((whole[name] - split[name]).abs().max().item() for name in whole) < 1e-6
    assert max(delta.abs().max().item() for delta in whole.values()) > 1e-3  # the step did something
    shared = step_delta("p2b2", folder, chat_rows, batch=2, accum=1, processes=2)  # the same 4 examples, 2 each
    assert max((whole[name] - shared[name]).abs().max().item() for name in whole) < 1e-6


@pytest.mark.parametrize("method", ["full", "lora"])
def test_ten_steps_equal_five_then_resume_then_five(studio_home, tmp_path, chat_rows, method):
    folder = tmp_path / "qwen3"
    make_hf_model(folder, "qwen3", chat_template=CHATML)
    changes = {"train.method": method, "train.max_steps": 10, "train.checkpoint_interval": 5}
    changes |= {"train.lr": 1e-2, "train.lora_dropout": 0.1}  # dropout: the random streams must resume too
    straight_and_resumed(adapt_config(folder, chat_rows, changes), stop_at=5)


@pytest.mark.parametrize("family", ["llama-native", "qwen2", "gemma3"])
def test_a_packed_batch_has_the_loss_of_the_same_examples_unpacked(studio_home, tmp_path, chat_rows, family):
    from studio.model import lm_loss_sum

    if family == "llama-native":  # the studio's own Llama, from a run of it
        base = tmp_path / "llama"
        make_hf_model(base, "llama", chat_template=CHATML)
        config = adapt_config(base, chat_rows)
        config.model.arch = "llama"
        config.model.n_layer, config.model.n_head, config.model.n_embd, config.model.vocab_size = 2, 4, 64, 320
        config.model.block_size = 64
        config.train.init_from = ""
        model = build_run_model(config).module
        prepare_run(adapt_config(base, chat_rows, HOLD_ONE_OUT), "data-only")  # tokenized for llama's vocab
    else:
        folder = tmp_path / family
        make_hf_model(folder, family, chat_template=CHATML)
        run_dir = prepare_run(adapt_config(folder, chat_rows, HOLD_ONE_OUT), "packed")
        model = build_run_model(RunConfig.load(run_dir / "config.toml")).module
    (dataset_dir,) = [path for path in (studio_home / "datasets").iterdir() if not path.name.startswith(".")]
    dataset = open_dataset(dataset_dir.name)
    examples = ExampleFile(dataset.bin_path("train"), dataset.dtype)
    count = len(examples)
    packed = ExampleStream(examples, batch_size=2, block_size=64, packing=True, seed=0, shuffle=False)
    plain = ExampleStream(examples, batch_size=count, block_size=64, packing=False, seed=0, shuffle=False)
    packed_batch = packed.next(TrainingState())
    assert packed_batch.positions is not None and packed_batch.x.size(0) == 2
    plain_batch = plain.next(TrainingState())
    model.eval()
    with torch.no_grad():
        packed_loss = lm_loss_sum(model(packed_batch.x, positions=packed_batch.positions)[0], packed_batch.y)
        plain_loss = lm_loss_sum(model(plain_batch.x)[0], plain_batch.y)
    drawn = TrainingState()
    packed.next(drawn)
    assert drawn.examples_drawn == count  # two rows of 64 hold all of these short examples
    assert packed_batch.supervised == plain_batch.supervised
    assert abs(packed_loss.item() - plain_loss.item()) < 1e-4 * plain_loss.item()


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_the_studios_own_models_take_adapters_too(studio_home, tmp_path, code_text, method):
    from tests.helpers import tiny_config

    config = tiny_config({"data.source": str(code_text), "train.method": method, "train.lr": 2e-2})
    for key, value in QUICK.items():
        set_field(config, key, value)
    set_field(config, "train.lr", 5e-2)
    set_field(config, "train.max_steps", 30)
    run_dir = train_in_process(config, "native")
    saved = load_file(find_checkpoint(run_dir) / "model.safetensors")
    assert any("lora_A" in name for name in saved) and any("base_layer" in name for name in saved)  # a random base
    curve = losses(run_dir)
    # adapters on a random base learn, slowly: LoRA's first five steps' mean fell by 0.05 to 0.11 by the last five
    # over 3 seeds and 2 kinds of dropout draws, DoRA's by 0.2; single steps scatter by about ±0.03 around the trend
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.04, curve
    out = tmp_path / "merged"
    result = export_run("native", out)  # merged into the studio's weights, then checked against transformers
    assert result.max_logit_diff is not None and result.max_logit_diff < 1e-4
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert logit_gap("native", reloaded, "class Point:") < 1e-4
