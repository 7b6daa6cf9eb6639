"""The studio's trainer against a plain PyTorch loop on the same batches: a Hugging Face model (a tiny Qwen2 with
tied embeddings) and the studio's own (the tiny preset), each trained 20 steps both ways from the same weights with
AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, cosine lr and clipping 1.0. The losses must agree to 1e-4:
whatever the trainer adds (accumulation, Accelerate, the schedule, the parameter groups) computes a plain loop."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from studio.config import RunConfig, set_field
from studio.data.batches import TokenFile, sample_batch
from studio.runs.prepare import prepare_run
from studio.train.trainer import Trainer
from tests.helpers import tiny_config
from tests.hf_models import TEXT, make_hf_model

pytestmark = pytest.mark.slow  # trains two small models in this process

STEPS, LR, MIN_LR, DECAY, BETAS, CLIP = 20, 3e-3, 2e-4, 0.1, (0.9, 0.99), 1.0
SETTINGS = {
    "model.block_size": 32, "train.batch_size": 4, "train.max_steps": STEPS, "train.lr": LR, "train.min_lr": MIN_LR,
    "train.schedule": "cosine", "train.warmup_steps": 0, "train.weight_decay": DECAY, "train.beta1": BETAS[0],
    "train.beta2": BETAS[1], "train.grad_clip": CLIP, "train.sample_interval": 0,
}  # fmt: skip


def plain_losses(model: torch.nn.Module, logits_of, trainer: Trainer) -> list[float]:
    """STEPS steps of the textbook loop on the windows the trainer draws (its data generator, seeded alike)."""
    config = trainer.config
    train = TokenFile(trainer.dataset.bin_path("train"), trainer.dataset.dtype)
    generator = torch.Generator().manual_seed(config.train.seed)
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
    model.train()
    losses = []
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = MIN_LR + 0.5 * (1 + math.cos(math.pi * step / STEPS)) * (LR - MIN_LR)
        x, y = sample_batch(train, config.train.batch_size, config.model.block_size, generator)
        loss = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def studio_losses(trainer: Trainer) -> list[float]:
    trainer.prepared_model.train()  # as Trainer.run leaves it after its first evaluation
    losses = []
    for _ in range(STEPS):
        step = trainer.train_step(log=False)
        trainer.state.step += 1
        losses.append((step.loss_sums[0] / step.learned).item())
    return losses


def configured(config: RunConfig) -> RunConfig:
    for key, value in SETTINGS.items():
        set_field(config, key, value)
    return config


def test_a_hugging_face_model_trains_as_in_a_plain_loop(studio_home, tmp_path):
    make_hf_model(tmp_path / "qwen2", "qwen2")
    data = tmp_path / "code.txt"
    data.write_text(TEXT * 80, encoding="utf-8")
    config = RunConfig()
    config.data.source, config.train.init_from = str(data), str(tmp_path / "qwen2")
    trainer = Trainer(prepare_run(configured(config), "hf"))
    plain = copy.deepcopy(trainer.run_model.inner)  # transformers' model, as loaded from the folder
    assert plain.config.tie_word_embeddings
    expected = plain_losses(plain, lambda model, x: model(input_ids=x).logits, trainer)
    assert studio_losses(trainer) == pytest.approx(expected, abs=1e-4)
    assert expected[-1] < expected[0] - 1.0  # it learned


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_studio_model_trains_as_in_a_plain_loop(studio_home, tmp_path, arch):
    data = tmp_path / "code.txt"
    data.write_text(TEXT * 80, encoding="utf-8")
    config = configured(tiny_config({"model.arch": arch}))
    config.data.source = str(data)
    trainer = Trainer(prepare_run(config, arch))
    plain = copy.deepcopy(trainer.run_model.inner)  # the same model object, its starting weights
    expected = plain_losses(plain, lambda model, x: model(x)[0], trainer)
    assert studio_losses(trainer) == pytest.approx(expected, abs=1e-4)
    assert expected[-1] < expected[0] - 0.5
