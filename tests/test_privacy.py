"""Differentially private training (DP-SGD through Opacus): the ε in the train events is Opacus's RDP accountant's
for the run's noise, sampling rate and steps; each example's gradient is clipped before the noise; the accountant's
history survives a resume; budgets the planned steps cannot meet and layers Opacus cannot handle are one line."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from studio.checkpoints.files import TRAINER_STATE
from studio.config import validate
from studio.data.batches import TokenFile
from studio.data.prepare import open_dataset
from studio.errors import StudioError
from studio.run_folder.events import format_event
from studio.run_folder.layout import EVENTS, find_checkpoint, read_config
from studio.runs.prepare import prepare_run
from studio.sizing.sizes import run_sizes
from studio.train.trainer import Trainer
from tests.helpers import TINY_TRAIN, tiny_config
from tests.test_adapt import straight_and_resumed, train_in_process

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")

opacus = pytest.importorskip("opacus")

PRIVATE = {"train.privacy_epsilon": 8.0, "train.max_steps": 10, "train.log_interval": 5, "train.eval_interval": 10,
           "train.sample_interval": 0, "train.checkpoint_interval": 100}  # fmt: skip


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / EVENTS).read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["kind"] == kind]


def rdp_epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    accountant = opacus.accountants.RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=rate)
    return accountant.get_epsilon(delta=delta)


@pytest.mark.slow
def test_the_epsilon_of_the_train_events_is_opacus_accountants(studio_home, code_corpus):
    config = tiny_config({"data.source": str(code_corpus), **PRIVATE})
    run_dir = train_in_process(config, "private")
    running = next(event for event in events(run_dir, "status") if event["state"] == "running")
    noise, rate, delta = running["noise_multiplier"], running["sample_rate"], running["delta"]
    assert delta == 1e-5 and running["max_grad_norm"] == 1.0
    dataset = open_dataset(read_config(run_dir).data.dataset)
    windows = (len(TokenFile(dataset.bin_path("train"), dataset.dtype)) - 1) // config.model.block_size
    assert rate == config.train.batch_size / windows  # the accountant's rate: batch over the disjoint windows
    expected_noise = opacus.accountants.utils.get_noise_multiplier(
        target_epsilon=8.0, target_delta=delta, sample_rate=rate, steps=10
    )
    assert noise == pytest.approx(expected_noise, rel=1e-5)
    spent = [(event["step"], event["epsilon"]) for event in events(run_dir, "train")]
    assert [step for step, _ in spent] == [5, 10]
    for step, epsilon in spent:
        assert epsilon == pytest.approx(rdp_epsilon(noise, rate, step, delta), rel=1e-5)
    assert spent[0][1] < spent[1][1] <= 8.0
    assert format_event(events(run_dir, "train")[-1]).endswith(f"ε {spent[1][1]:.3g}")  # trainer.log's line


@pytest.mark.slow
def test_each_examples_gradient_is_clipped_before_the_noise(studio_home, code_corpus):
    """With noise 0, the gradient the optimizer receives is the sum of every example's own gradient (computed here
    by plain autograd, one example at a time) scaled to at most max_grad_norm, over the expected batch."""
    clip = 0.05
    config = tiny_config({"data.source": str(code_corpus), **PRIVATE, "train.privacy_max_grad_norm": clip})
    trainer = Trainer(prepare_run(config, "clipped"))
    trainer.privacy.optimizer.noise_multiplier = 0.0
    batch = trainer.train_stream.next(trainer.state)
    reference = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.accumulate_gradients([batch], 1 / trainer.privacy.loss_divisor)
    trainer.privacy.optimizer.pre_step()  # clip, add the noise (none), divide by the expected batch
    received = {name: p.grad.clone() for name, p in trainer.model.named_parameters()}
    held = sum(t.numel() for p in trainer.model.parameters() for t in (p.grad, p.grad_sample, p.summed_grad))
    rows = replace(config.train, batch_size=batch.x.size(0))  # the estimate at the batch Poisson drew
    assert 4 * held == run_sizes(replace(config, train=rows), None).memory["gradients"]

    from studio.model import build_model, lm_loss_sum

    plain = build_model(config.model)
    plain.load_state_dict(reference)
    clipped_sum = {name: torch.zeros_like(p) for name, p in plain.named_parameters()}
    norms = []
    for row in range(batch.x.size(0)):
        plain.zero_grad()
        logits, _ = plain(batch.x[row : row + 1])
        (lm_loss_sum(logits, batch.y[row : row + 1]) / config.model.block_size).backward()
        norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in plain.parameters()))
        norms.append(float(norm))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        assert float(norm) * factor <= clip * (1 + 1e-5)
        for name, p in plain.named_parameters():
            clipped_sum[name] += p.grad * factor
    assert min(norms) > clip  # the clipping acted on every example
    for name, gradient in received.items():
        torch.testing.assert_close(gradient, clipped_sum[name] / config.train.batch_size, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_a_resumed_run_keeps_its_noise_and_its_epsilon_continues(studio_home, code_corpus):
    config = tiny_config({"data.source": str(code_corpus), **PRIVATE, "train.max_steps": 5})
    run_dir = train_in_process(config, "resumed")  # its noise planned for 5 steps, a checkpoint at the last
    state = json.loads((find_checkpoint(run_dir, 5) / TRAINER_STATE).read_text())
    running = next(event for event in events(run_dir, "status") if event["state"] == "running")
    noise, rate = running["noise_multiplier"], running["sample_rate"]
    assert state["privacy_history"] == [[pytest.approx(noise, rel=1e-5), rate, 5]]
    config_path = run_dir / "config.toml"
    config_path.write_text(config_path.read_text().replace("max_steps = 5", "max_steps = 10"))
    train_in_process(config, "resumed", resume_step=5)
    last = events(run_dir, "train")[-1]
    assert last["step"] == 10 and last["epsilon"] == pytest.approx(rdp_epsilon(noise, rate, 10, 1e-5), rel=1e-5)
    resumed = [event for event in events(run_dir, "status") if event["state"] == "running"][-1]
    assert resumed["noise_multiplier"] == noise  # not planned again for 10 steps


@pytest.mark.slow
def test_a_private_run_resumes_exactly(studio_home, code_corpus):
    """The Poisson draws (the data generator) and the noise (the torch stream) continue as if never stopped."""
    noisy = {**PRIVATE, "train.privacy_epsilon": 0.0, "train.privacy_noise_multiplier": 1.0}
    straight, halves = straight_and_resumed(tiny_config({"data.source": str(code_corpus), **noisy}), stop_at=5)
    assert events(halves, "train")[-1]["epsilon"] == events(straight, "train")[-1]["epsilon"]


@pytest.mark.slow
def test_a_budget_the_planned_steps_cannot_meet_is_one_line_at_launch(run_cli, code_corpus):
    tight = ["--privacy-epsilon", "0.05", "--max-steps", "20"]
    code, out, err = run_cli("train", *TINY_TRAIN, "--data", code_corpus, "--name", "tight", *tight)
    failed = [line for line in (out + err).splitlines() if "error:" in line]
    assert code != 0 and len(failed) == 1 and "Traceback" not in out + err
    assert "train.privacy_epsilon 0.05 cannot be met by 20 steps" in failed[0] and "fewer steps" in failed[0]


def test_a_noise_whose_steps_spend_more_than_the_target_names_the_most_steps_within_it():
    from studio.train.privacy import epsilon_spent, planned_noise

    train = tiny_config({"train.privacy_epsilon": 2.0, "train.privacy_noise_multiplier": 1.0}).train
    with pytest.raises(StudioError, match=r"spends ε 2.1 over 1000 steps, more than train.privacy_epsilon 2.0") as e:
        planned_noise(train, sample_rate=0.01)
    most = int(str(e.value).split("take at most ")[1].split()[0])
    assert epsilon_spent(1.0, 0.01, most, 1e-5) <= 2.0 < epsilon_spent(1.0, 0.01, most + 1, 1e-5)
    train.max_steps = most
    assert planned_noise(train, sample_rate=0.01) == 1.0  # within the budget: the noise given


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "named"), [("lstm", "We do not support nn.LSTM"), ("rnn", "nn.RNN (rnn) has no per-example gradients")]
)
def test_layers_opacus_cannot_handle_are_named_in_one_line(studio_home, code_corpus, arch, named):
    config = tiny_config({"data.source": str(code_corpus), **PRIVATE, "model.arch": arch})
    start = "differentially private training: Opacus cannot handle this model ("
    with pytest.raises(StudioError, match="^" + re.escape(start + named)) as error:
        Trainer(prepare_run(config, "recurrent"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train.num_processes": 2}, "runs in one process"),
        ({"train.grad_accum": 2}, "set train.grad_accum 1"),
        ({"train.mixed_precision": "bf16"}, "trains in fp32"),
        ({"train.method": "dora"}, "not dora: use lora"),
        ({"train.method": "full", "model.arch": "hf", "train.init_from": "x"}, "LoRA adapters only"),
        ({"train.objective": "dpo", "train.init_from": "x"}, "not dpo"),
        ({"data.packing": True}, "set data.packing false"),
        ({"train.privacy_delta": 1.0}, "train.privacy_delta must be in (0, 1)"),
        ({"train.privacy_max_grad_norm": 0.0}, "train.privacy_max_grad_norm must be positive"),
    ],
)
def test_what_private_training_does_not_do_is_refused_in_one_line(changes, message):
    config = tiny_config({"train.privacy_epsilon": 3.0, **changes})
    with pytest.raises(StudioError, match=re.escape(message)):
        validate(config)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_private_lora_classifier_learns_and_its_epsilon_is_on_the_dashboard_and_in_the_report(
    studio_home, tmp_path, run_cli
):
    """LoRA on a tiny Hugging Face Llama, the adapters (and the new head) the only private gradients, on the
    generated sentiment task: at ε 8 it reaches 85% validation accuracy in 30 steps (0.92 measured)."""
    from tests.hf_models import make_hf_model
    from tests.test_app import static_text
    from tests.test_classify import classify_config, last_eval, sentiment_rows, write_rows
    from widgets.app import StudioApp
    from widgets.loss_chart import LossChart
    from widgets.run_header import RunHeader
    from widgets.screens.dashboard import DashboardScreen

    rows, folder = write_rows(tmp_path / "sentiment.jsonl", sentiment_rows()), tmp_path / "llama"
    make_hf_model(folder, "llama")
    private = {"train.method": "lora", "train.lr": 1e-2, "train.max_steps": 30, "train.eval_interval": 30,
               "train.privacy_epsilon": 8.0}  # fmt: skip
    run_dir = train_in_process(classify_config(rows, str(folder), private), "private-lora")
    assert last_eval("private-lora")["val_acc"] >= 0.85
    trainable = next(event for event in events(run_dir, "status") if event["state"] == "running")
    assert trainable["trainable_params"] < trainable["params"] / 3  # the adapters and the head, not the base
    epsilon = events(run_dir, "train")[-1]["epsilon"]
    assert 7.5 < epsilon <= 8.0
    app = StudioApp()
    async with app.run_test(size=(160, 48)) as pilot:
        app.push_screen(DashboardScreen(run_dir))
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert f"ε {epsilon:.3g} of 8 at δ 1e-05" in static_text(app.screen.query_one(RunHeader))
        spent = next(curve for curve in app.screen.query_one(LossChart).curves if curve.label == "ε spent")
        assert spent.steps[-1] == 30 and spent.values[-1] == epsilon
    code, _, err = run_cli("report", "private-lora", "--out", tmp_path / "report")
    assert code == 0, err
    assert f"<td>ε {epsilon:.3g} of 8 at δ 1e-05</td>" in (tmp_path / "report" / "index.html").read_text()


@pytest.mark.asyncio
async def test_the_train_tab_sets_a_privacy_budget_that_reaches_the_command(studio_home):
    from tests.test_app import SIZE, parse_back, static_text, type_into
    from widgets.app import StudioApp

    app = StudioApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await type_into(pilot, "train.privacy_epsilon", "3")
        await type_into(pilot, "train.privacy_max_grad_norm", "0.5")
        await pilot.pause(0.3)
        assert app.config.train.private and app.config.train.privacy_max_grad_norm == 0.5
        command = static_text(app.query_one("#train-command"))
        assert "--privacy-epsilon 3.0" in command and "--privacy-max-grad-norm 0.5" in command
        assert parse_back(command).to_dict() == app.config.to_dict()


def test_poisson_sampling_takes_each_chat_example_with_the_accountants_rate(studio_home, tmp_path, chat_rows):
    """Six conversations at batch 3: each drawn with probability 1/2, independently; every row one example, padded;
    an empty draw (1/64 of them) learns nothing."""
    from studio.checkpoints.training_state import TrainingState
    from studio.data.batches import IGNORE, ExampleFile, private_examples
    from tests.hf_models import CHATML, make_hf_model

    folder = tmp_path / "model"
    make_hf_model(folder, "qwen2", chat_template=CHATML)
    config = tiny_config({"data.source": str(chat_rows), "train.init_from": str(folder), "model.block_size": 64})
    dataset = open_dataset(read_config(prepare_run(config, "chat")).data.dataset)
    examples = ExampleFile(dataset.bin_path("train"), dataset.dtype)
    pairs = [tuple(map(torch.from_numpy, examples.pair(index, 64))) for index in range(len(examples))]
    stream = private_examples(examples, 3, 64, dataset.meta.pad_id)
    assert len(examples) == 6 and stream.rate == 0.5
    state = TrainingState()
    state.data_generator.manual_seed(0)
    drawn, empty = [0] * 6, 0
    for _ in range(2000):
        batch = stream.next(state)
        if batch.supervised == 0:
            empty += 1
            assert batch.tokens == 0 and (batch.y == IGNORE).all()
            continue
        for row in range(batch.x.size(0)):
            index = next(i for i, (x, _) in enumerate(pairs) if torch.equal(batch.x[row, : len(x)], x))
            assert torch.equal(batch.y[row, : len(pairs[index][1])], pairs[index][1])
            assert (batch.y[row, len(pairs[index][1]) :] == IGNORE).all()  # the padding learns nothing
            drawn[index] += 1
    assert all(abs(count / 2000 - 0.5) < 0.04 for count in drawn), drawn
    assert 10 <= empty <= 55  # 2000 / 64 = 31 expected
