"""Preference objectives (DPO, IPO, ORPO, SimPO, KTO): their invariants, their losses against TRL's, a toy set
they learn, and the command line end to end (prepare, train, evaluate on a preference file, export)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import save as safetensors_bytes

from studio.config import RunConfig, set_field
from studio.data.batches import IGNORE
from studio.model import answer_logps
from studio.run_folder.layout import EVENTS, REFERENCE_LOGPS
from studio.runs.prepare import prepare_run
from studio.train.objectives.preference import kto_losses, log1mexp, pair_losses
from tests.hf_models import CHATML, make_hf_model

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")

transformers = pytest.importorskip("transformers")

LN2 = 0.6931471824645996


def train_keys(**changes) -> SimpleNamespace:
    """A config's train section with its preference keys (defaults, then changes)."""
    config = RunConfig()
    for key, value in changes.items():
        set_field(config, f"train.{key}", value)
    return config.train


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def toy_rows(count: int = 24) -> list[dict]:
    """Separable pairs: the chosen answers in one style, the rejected ones in another."""
    return [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": "yes yes"}],
            "rejected": [{"role": "assistant", "content": "no no"}],
        }
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("pref") / "base"
    return folder, make_hf_model(folder, "llama", chat_template=CHATML)


def random_batch(rows: int = 4, length: int = 10, vocab: int = 320) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and targets whose first 4 positions are a prompt (IGNORE) and whose answers end at different places."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(4, vocab, (rows, length), generator=generator)
    y = torch.roll(x, -1, dims=1)
    y[:, :4] = IGNORE
    for row in range(rows):
        y[row, length - 1 - row % 3 :] = IGNORE  # right padding of different lengths
    return x, y


# ---- invariants -------------------------------------------------------------------------------------------------
def test_dpo_starts_at_ln2_with_zero_rewards_when_the_policy_is_its_reference(tiny):
    _, model = tiny
    x, y = random_batch()
    logps, tokens = answer_logps(model(x).logits, y)
    policy = (logps[:2], logps[2:], tokens[:2], tokens[2:])
    terms = pair_losses("dpo", train_keys(), policy, (logps[:2].detach(), logps[2:].detach()))
    assert terms.loss.mean().item() == pytest.approx(LN2, abs=1e-6)
    assert terms.reward_chosen.abs().max().item() == 0 and terms.reward_rejected.abs().max().item() == 0
    assert (terms.reward_chosen - terms.reward_rejected).abs().max().item() == 0


def test_chosen_equal_to_rejected_gives_ln2_and_no_gradient(tiny):
    _, model = tiny
    model.zero_grad()
    x, y = random_batch(2)
    doubled_x, doubled_y = torch.cat([x, x]), torch.cat([y, y])
    logps, tokens = answer_logps(model(doubled_x).logits, doubled_y)
    reference = (logps[:2].detach() - 0.3, logps[2:].detach() - 0.3)
    loss = pair_losses("dpo", train_keys(), (logps[:2], logps[2:], tokens[:2], tokens[2:]), reference).loss.mean()
    loss.backward()
    assert loss.item() == pytest.approx(LN2, abs=1e-6)
    assert max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None) < 1e-7
    model.zero_grad()


@pytest.mark.parametrize("side", ["left", "right"])
def test_prompt_and_padding_add_nothing_to_the_log_probabilities_whatever_the_padding_side(side):
    generator = torch.Generator().manual_seed(0)
    answer = torch.randn(1, 3, 50, generator=generator)
    targets = torch.tensor([[7, 8, 9]])
    alone = answer_logps(answer, targets)[0]
    filler = torch.full((1, 4, 50), float("inf"))  # prompt and padding positions whose logits are not even finite
    ignored = torch.full((1, 4), IGNORE)
    logits = torch.cat([filler, answer] if side == "left" else [answer, filler], dim=1)
    y = torch.cat([ignored, targets] if side == "left" else [targets, ignored], dim=1)
    assert torch.equal(answer_logps(logits, y)[0], alone)


def test_one_concatenated_forward_equals_two_separate_ones(tiny):
    _, model = tiny
    x, y = random_batch()
    together = answer_logps(model(x).logits, y)[0]
    apart = torch.cat([answer_logps(model(x[:2]).logits, y[:2])[0], answer_logps(model(x[2:]).logits, y[2:])[0]])
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-5)


def test_accumulating_four_single_pairs_equals_one_batch_of_four(tiny):
    """The trainer sums each micro-batch's per-pair losses and divides by the step's pairs: 1×4 and 4×1 agree."""
    _, model = tiny
    x, y = random_batch(8, 10)
    reference = answer_logps(model(x).logits, y)[0].detach() - torch.linspace(0, 1, 8)

    def gradients(splits: list[list[int]]) -> list[torch.Tensor]:
        model.zero_grad()
        for pairs in splits:
            rows = pairs + [pair + 4 for pair in pairs]
            logps, tokens = answer_logps(model(x[rows]).logits, y[rows])
            n = len(pairs)
            terms = pair_losses(
                "dpo",
                train_keys(),
                (logps[:n], logps[n:], tokens[:n], tokens[n:]),
                (reference[pairs], reference[[p + 4 for p in pairs]]),
            )
            (terms.loss.sum() / 4).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        return grads

    for one, four in zip(gradients([[0, 1, 2, 3]]), gradients([[0], [1], [2], [3]])):
        torch.testing.assert_close(one, four, rtol=1e-4, atol=1e-7)


def test_orpo_on_equal_answers_is_the_nll_plus_beta_ln2_and_stays_finite_near_certainty():
    beta = 0.25
    for mean_logp in (-2.0, -1e-3, -1e-9, 0.0):
        logp = torch.tensor([mean_logp * 5], requires_grad=True)
        tokens = torch.tensor([5])
        terms = pair_losses("orpo", train_keys(beta=beta), (logp, logp, tokens, tokens), None)
        assert terms.loss.item() == pytest.approx(-mean_logp + beta * LN2, abs=1e-6)
        terms.loss.sum().backward()
        assert math.isfinite(logp.grad.item())
    assert torch.isfinite(log1mexp(torch.tensor([0.0, -1e-30]))).all()


# ---- against TRL (a test-only extra) ----------------------------------------------------------------------------
def test_the_losses_equal_trls(tiny, monkeypatch):
    """On a tiny Llama and a fixed batch: the answers' log-probabilities are computed once, then each loss is TRL
    1.16's on them. ORPO's odds-ratio term and SimPO's loss are TRL's own functions (ORPOTrainer.odds_ratio_loss,
    CPOTrainer.cpo_loss with loss_type simpo); robust DPO's (label smoothing 0.1) and KTO's formulas are inline in
    TRL's DPOTrainer._compute_loss and KTOTrainer._compute_loss, transcribed here from those lines. Plain DPO is
    compared with TRL's DPOTrainer itself below (test_dpo_equals_trls_trainer). DPO's gradients are compared too."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    trl = pytest.importorskip("trl")
    assert trl.__version__ == "1.16.0"
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    _, model = tiny
    x, y = random_batch(6, 12)
    with torch.no_grad():
        reference = answer_logps(model(x).logits, y)[0] - torch.linspace(-1, 1, 6)
    device = SimpleNamespace(device=torch.device("cpu"))

    logps, tokens = answer_logps(model(x).logits, y)
    chosen, rejected, chosen_n, rejected_n = logps[:3], logps[3:], tokens[:3], tokens[3:]
    # DPO, robust: TRL's dpo_trainer.py, loss_type "robust"
    beta, eps = 0.2, 0.1
    ours = pair_losses("dpo", train_keys(beta=beta, label_smoothing=eps), (chosen, rejected, chosen_n, rejected_n),
                       (reference[:3], reference[3:])).loss.mean()  # fmt: skip
    delta = (chosen - reference[:3]) - (rejected - reference[3:])
    theirs = ((-(1 - eps) * torch.nn.functional.logsigmoid(beta * delta))
              - (-eps * torch.nn.functional.logsigmoid(-beta * delta))) / (1 - 2 * eps)  # fmt: skip
    theirs = theirs.mean()
    ours_grad = torch.autograd.grad(ours, list(model.parameters()), retain_graph=True)
    theirs_grad = torch.autograd.grad(theirs, list(model.parameters()), retain_graph=True)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # ORPO's odds-ratio term, on the per-token mean log-probabilities
    orpo = SimpleNamespace(beta=0.3, accelerator=device)
    ratio = ORPOTrainer.odds_ratio_loss(orpo, chosen / chosen_n, rejected / rejected_n)[0]
    ours = pair_losses("orpo", train_keys(beta=0.3), (chosen, rejected, chosen_n, rejected_n), None).loss
    torch.testing.assert_close(ours - (-chosen / chosen_n), -ratio, rtol=0, atol=1e-5)
    # SimPO
    cpo = SimpleNamespace(beta=2.0, simpo_gamma=0.5, alpha=0.0, loss_type="simpo", label_smoothing=0.0,
                          accelerator=device)  # fmt: skip
    theirs = CPOTrainer.cpo_loss(cpo, chosen / chosen_n, rejected / rejected_n)[0]
    ours = pair_losses("simpo", train_keys(beta=2.0, simpo_gamma=0.5), (chosen, rejected, chosen_n, rejected_n), None)
    torch.testing.assert_close(ours.loss, theirs, rtol=0, atol=1e-5)
    # KTO: rows 0, 2, 4 desirable; z from given mismatched log-ratios
    desirable = torch.tensor([True, False, True, False, True, False])
    kl = torch.tensor(0.05)
    train = train_keys(beta=0.1, kto_desirable_weight=1.5, kto_undesirable_weight=0.7)
    ours = kto_losses(train, logps, reference, desirable, kl)[0]
    ratio = logps - reference
    chosen_losses = 1 - torch.sigmoid(0.1 * (ratio[desirable] - kl))
    rejected_losses = 1 - torch.sigmoid(0.1 * (kl - ratio[~desirable]))
    theirs = torch.cat((1.5 * chosen_losses, 0.7 * rejected_losses), 0)
    torch.testing.assert_close(ours.mean(), theirs.mean(), rtol=0, atol=1e-6)


# ---- learning, end to end ----------------------------------------------------------------------------------------
def eval_events(run_dir: Path, kind: str = "eval") -> list[dict]:
    events = [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines()]
    return [event for event in events if event["kind"] == kind]


@pytest.mark.slow
def test_dpo_with_lora_learns_the_chosen_style_from_the_command_line(tiny, studio_home, tmp_path, run_cli):
    """prepare, train --objective dpo --method lora, evaluate on the preference file, generate, export."""
    folder, _ = tiny
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows())
    code, _, err = run_cli(
        "prepare", data, "--init-from", folder, "--block-size", 64, "--val-fraction", 0.2, "--objective", "dpo"
    )
    assert code == 0, err
    quick = ["--set", "train.batch_size=4", "--set", "train.lr=3e-3", "--set", "train.eval_interval=12",
             "--set", "train.sample_interval=0", "--set", "train.warmup_steps=0", "--set", "model.block_size=64",
             "--set", "data.val_fraction=0.2", "--set", "train.log_interval=4"]  # fmt: skip
    code, _, err = run_cli("train", "--data", data, "--init-from", folder, "--objective", "dpo", "--method", "lora",
                           "--max-steps", 24, "--name", "aligned", *quick)  # fmt: skip
    assert code == 0, err
    from studio.run_folder.layout import run_path

    evals = eval_events(run_path("aligned"))
    assert evals[0]["val_loss"] == pytest.approx(LN2, abs=1e-6) and evals[0]["val_margin"] == 0
    assert evals[-1]["val_pair_acc"] >= 0.95 and evals[-1]["val_margin"] > 0

    code, out, err = run_cli("evaluate", "aligned", "--data", data, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["kind"] == "preference" and report["pair_accuracy"] >= 0.95 and report["mean_margin"] > 0
    assert report["pairs"] == 24

    code, out, _ = run_cli("generate", "aligned", "--prompt", "Question 99?", "--temperature", "0",
                           "--max-new-tokens", 6)  # fmt: skip
    assert code == 0 and out.split("assistant: ")[1].startswith("yes")  # greedy answers take the chosen style

    exported = tmp_path / "exported"
    assert run_cli("export", "aligned", "--out", exported)[0] == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    code, out, _ = run_cli("evaluate", exported, "--data", data, "--json")
    assert code == 0 and json.loads(out)["pair_accuracy"] == report["pair_accuracy"]
    assert reloaded.config.vocab_size == 320


@pytest.mark.slow
def test_full_dpo_keeps_its_reference_frozen_and_lora_reference_is_the_base(tiny, studio_home, tmp_path):
    from studio.train.trainer import Trainer
    from tests.test_adapt import adapt_config

    folder, base = tiny
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows(8))
    changes = {"train.objective": "dpo", "model.block_size": 64, "train.max_steps": 3, "data.val_fraction": 0.25}
    changes |= {"train.sample_interval": 3, "train.sample_tokens": 4}
    trainer = Trainer(prepare_run(adapt_config(folder, data, changes), "full"))
    before = [p.detach().clone() for p in trainer.objective.reference.frozen.parameters()]
    trainer.run()
    after = list(trainer.objective.reference.frozen.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not torch.equal(trainer.model.hf.model.embed_tokens.weight, before[0])  # the policy moved
    events = [json.loads(line) for line in (trainer.run_dir / EVENTS).read_text().splitlines()]
    samples = [event["samples"] for event in events if event["kind"] == "sample"]
    held_out = [
        "<|im_start|>user\nQuestion 6?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nQuestion 7?<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert [[item["prompt"] for item in event] for event in samples] == [held_out, held_out]  # the held-out prompts

    lora = Trainer(prepare_run(adapt_config(folder, data, {**changes, "train.method": "lora"}), "lora"))
    lora.run()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(lora.objective.reference(x)[0], base(x).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(lora.model(x)[0], base(x).logits, atol=1e-4)  # the adapters learned something


@pytest.mark.slow
def test_the_first_dpo_step_is_ln2_with_dropout_in_the_model_and_with_a_precomputed_reference(studio_home, tmp_path):
    """A train event's figures are taken in the step's forward, before its update: the first one's policy is its
    reference, so its loss is ln 2 and its margin 0, also for a GPT-2 checkpoint (10% dropout, turned off) and with
    the reference's log-probabilities computed before training, which keeps no reference model."""
    from studio.train.trainer import Trainer
    from tests.test_adapt import adapt_config, losses

    folder = tmp_path / "gpt2"
    make_hf_model(folder, "gpt2", chat_template=CHATML)
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows(8))
    changes = {"train.objective": "dpo", "model.block_size": 64, "train.max_steps": 3, "train.log_interval": 1}
    changes |= {"data.val_fraction": 0.25, "train.sample_interval": 0, "train.batch_size": 2}
    live = Trainer(prepare_run(adapt_config(folder, data, changes), "live"))
    live.run()
    precomputed_config = adapt_config(folder, data, changes | {"train.precompute_reference": True})
    precomputed = Trainer(prepare_run(precomputed_config, "precomputed"))
    precomputed.run()
    assert live.frozen_weights and precomputed.frozen_weights == [] and precomputed.objective.reference is None
    for trainer in (live, precomputed):
        first = eval_events(trainer.run_dir, "train")[0]
        assert first["loss"] == pytest.approx(LN2, abs=1e-6) and first["margin"] == pytest.approx(0, abs=1e-6)
        assert first["pair_acc"] == 0 and first["reward_chosen"] == pytest.approx(0, abs=1e-6)
        assert first["logp_chosen"] < 0 and eval_events(trainer.run_dir, "train")[-1]["margin"] > 0
    assert losses(precomputed.run_dir) == pytest.approx(losses(live.run_dir), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_aligned_run_exports_merged_and_as_an_adapter_with_its_trained_logits(
    tiny, studio_home, tmp_path, run_cli, method
):
    """DPO for 2 steps, exported merged (and under LoRA as peft's adapter): transformers (peft on the base) reloads
    the logits of the studio's own model of the run, which are not the base's: the export holds the policy, not
    the reference (a frozen copy of the base under full fine-tuning)."""
    from tests.test_adapt import adapt_config, logit_gap, train_in_process

    folder, _ = tiny
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows(8))
    changes = {"train.objective": "dpo", "train.method": method, "model.block_size": 64, "train.max_steps": 2}
    changes |= {"data.val_fraction": 0.25, "train.lr": 2e-2}
    train_in_process(adapt_config(folder, data, changes), "aligned")
    text = "Question 99? yes no"
    base = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert logit_gap("aligned", base, text) > 1e-3  # the policy moved away from its reference
    merged = tmp_path / "merged"
    assert run_cli("export", "aligned", "--out", merged)[0] == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert logit_gap("aligned", reloaded, text) < 1e-4
    if method == "lora":
        from peft import PeftModel

        adapter = tmp_path / "adapter"
        assert run_cli("export", "aligned", "--out", adapter, "--adapter")[0] == 0
        adapted = PeftModel.from_pretrained(base, adapter).eval()
        assert logit_gap("aligned", adapted, text) < 1e-5


@pytest.mark.parametrize(
    ("row", "strict", "message"),
    [
        ({"prompt": "Hi?", "chosen": "yes"}, True, "line 2: a row without its fields"),
        ({"prompt": "Hi?", "chosen": "yes", "rejected": "yes"}, True, "with chosen equal to rejected"),
        ({"prompt": "Hi?", "chosen": " ", "rejected": "no"}, True, "with an empty answer"),
        (
            {
                "prompt": [{"role": "assistant", "content": "a"}],
                "chosen": [{"role": "user", "content": "b"}],
                "rejected": "c",
            },
            False,
            "is not the start of the rendering",
        ),  # fmt: skip
        (  # no prompt, answers of two kinds: was refused as a template mismatch, or read as a row without a prompt
            {"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "yes"}], "rejected": "no"},
            False,
            "line 2: chosen and rejected are one a string, one a message list",
        ),
    ],
)
def test_bad_preference_rows_are_refused_in_one_line_naming_the_row(tiny, tmp_path, run_cli, row, strict, message):
    folder, _ = tiny
    rows = toy_rows(3)
    rows.insert(1, row)
    data = write_rows(tmp_path / "prefs.jsonl", rows)
    args = ["prepare", data, "--init-from", folder, "--block-size", 64] + (["--strict"] if strict else [])
    code, _, err = run_cli(*args, "--objective", "dpo")
    assert code != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="bitsandbytes' 4-bit kernels run here")
@pytest.mark.parametrize("objective", ["dpo", "grpo"])
def test_qlora_on_a_cpu_is_one_line_before_any_data_is_prepared(tiny, tmp_path, run_cli, objective):
    from studio.paths import datasets_dir

    folder, _ = tiny
    data = write_rows(tmp_path / "rows.jsonl", toy_rows(4))  # pairs; GRPO takes their prompts
    rewards = ["--reward", "regex:yes"] if objective == "grpo" else []
    code, _, err = run_cli("train", "--init-from", folder, "--data", data, "--objective", objective, *rewards,
                           "--method", "qlora", "--name", "q")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "train.method qlora needs a CUDA GPU" in err, err
    assert not datasets_dir().exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("objective", "method", "precompute"),
    [
        ("dpo", "full", False),
        ("kto", "lora", False),
        ("orpo", "lora", False),
        ("ipo", "full", True),
        ("dpo", "lora", True),
    ],  # fmt: skip
)
def test_six_steps_equal_three_then_resume_then_three(
    tiny, studio_home, tmp_path, monkeypatch, objective, method, precompute
):
    """Bit-identical after stop and resume: the rows drawn continue, and a full run's reference stays the starting
    weights (it is copied, or its log-probabilities computed, before the checkpoint is loaded). Precomputed, they
    are computed once per run: the resume reads the run folder's."""
    from studio.train.objectives.preference import Objective
    from tests.test_adapt import adapt_config, straight_and_resumed

    computed = []
    compute = Objective.precomputed_logps
    monkeypatch.setattr(Objective, "precomputed_logps", lambda self, model: computed.append(1) or compute(self, model))
    folder, _ = tiny
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows(10))
    changes = {"train.objective": objective, "train.method": method, "model.block_size": 64, "train.max_steps": 6}
    changes |= {"train.checkpoint_interval": 3, "train.batch_size": 2, "train.lora_dropout": 0.1}
    changes |= {"train.precompute_reference": precompute}
    straight, halves = straight_and_resumed(adapt_config(folder, data, changes), stop_at=3)
    assert len(computed) == (2 if precompute else 0)  # the straight run's, and the halves' first start
    assert (halves / REFERENCE_LOGPS).is_file() == precompute


def test_a_kept_reference_that_does_not_fit_the_examples_is_computed_again(tiny, studio_home, tmp_path):
    """A reference file that holds another count of answers, or is no safetensors file, is not read: the run
    computes the log-probabilities again, and keeps those."""
    from safetensors.numpy import load

    from studio.train.trainer import Trainer
    from tests.test_adapt import adapt_config

    folder, _ = tiny
    data = write_rows(tmp_path / "prefs.jsonl", toy_rows(10))
    changes = {"train.objective": "dpo", "train.precompute_reference": True, "model.block_size": 64}
    run_dir = prepare_run(adapt_config(folder, data, changes | {"train.max_steps": 1}), "kept")
    kept = run_dir / REFERENCE_LOGPS
    for wrong in (b"not safetensors", safetensors_bytes({"train": np.zeros(3, np.float32)})):
        kept.write_bytes(wrong)
        trainer = Trainer(run_dir)
        assert {split: len(values) for split, values in trainer.objective.reference_logps.items()} == {
            split: len(trainer.objective.rows(split).examples) for split in ("train", "val")
        }
        assert all(np.array_equal(load(kept.read_bytes())[split], trainer.objective.reference_logps[split])
                   for split in ("train", "val"))  # fmt: skip


def test_the_objective_comes_from_train_objective_and_a_full_reference_counts_in_the_estimate():
    from studio.objectives import OBJECTIVES, objective_of
    from studio.sizing.sizes import run_sizes

    config = RunConfig()
    config.model.vocab_size = 320
    assert objective_of(config).name == "causal_lm"
    for name in ("dpo", "ipo", "orpo", "simpo", "kto"):
        set_field(config, "train.objective", name)
        assert objective_of(config) is OBJECTIVES[name] and objective_of(config).dataset == "preferences"
    assert [name for name in OBJECTIVES if OBJECTIVES[name].reference] == ["dpo", "ipo", "kto", "grpo"]  # grpo: β > 0
    set_field(config, "train.objective", "dpo")
    full = run_sizes(config, None)
    assert full.memory["reference"] == 4 * full.total
    set_field(config, "train.precompute_reference", True)
    assert run_sizes(config, None).memory["reference"] == 0  # log-probabilities computed before training
    set_field(config, "train.precompute_reference", False)
    set_field(config, "train.method", "lora")
    assert run_sizes(config, None).memory["reference"] == 0  # the base with its adapters off
    set_field(config, "train.objective", "orpo")
    set_field(config, "train.method", "full")
    assert run_sizes(config, None).memory["reference"] == 0  # no reference at all


def learned_answers(dataset_name: str) -> list[str]:
    """Each example of the train split: its learned tokens decoded."""
    import numpy as np

    from studio.data.batches import ExampleFile
    from studio.data.prepare import open_dataset
    from studio.data.tokenizer import load_tokenizer

    dataset = open_dataset(dataset_name)
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    examples = ExampleFile(dataset.bin_path("train"), dataset.dtype)
    texts = []
    for index in range(len(examples)):
        start, end = examples.offsets[index], examples.offsets[index + 1]
        ids = np.asarray(examples.ids[start:end])[np.asarray(examples.mask[start:end]) > 0]
        texts.append(tokenizer.decode(ids.tolist(), skip_special_tokens=False))
    return texts


@pytest.mark.parametrize("shape", ["explicit-strings", "implicit-messages", "implicit-strings-csv"])
def test_explicit_and_implicit_prompts_learn_only_the_answers(tiny, studio_home, tmp_path, shape):
    from studio.data.prepare import list_datasets
    from studio.runs.prepare import prepare_data
    from tests.test_adapt import adapt_config

    folder, _ = tiny
    user = [{"role": "user", "content": "Hi?"}]
    if shape == "explicit-strings":
        rows = [{"prompt": "Hi?", "chosen": "yes", "rejected": "no"}] * 2 + [
            {"prompt": "Yo?", "chosen": "a", "rejected": "b"}
        ]
        data = write_rows(tmp_path / "prefs.jsonl", rows)
    elif shape == "implicit-messages":
        rows = [{"chosen": user + [{"role": "assistant", "content": "yes"}],
                 "rejected": user + [{"role": "assistant", "content": "no"}]}] * 3  # fmt: skip
        data = write_rows(tmp_path / "prefs.jsonl", rows)
    else:  # TRL's implicit string prompt: the shared text, a space before the difference kept with the answers
        data = tmp_path / "prefs.csv"
        data.write_text("chosen,rejected\nHi? yes,Hi? no\nHi? yes,Hi? no\nHi? yes,Hi? no\n")
    config = adapt_config(folder, data, {"train.objective": "dpo", "model.block_size": 64, "data.dedup": False})
    prepare_data(config)
    (dataset,) = list_datasets()
    assert dataset.meta.row_format == "pairs" and dataset.meta.examples == {"train": 4, "val": 2}
    answers = learned_answers(dataset.name)
    expected = [" yes", " no"] if shape == "implicit-strings-csv" else ["yes", "no"]
    assert answers == [f"{expected[0]}<|im_end|>\n", f"{expected[1]}<|im_end|>\n"] * 2


def test_kto_learns_from_unpaired_rows_and_dpo_refuses_them(tiny, studio_home, tmp_path):
    from tests.test_adapt import adapt_config, losses, train_in_process

    folder, _ = tiny
    rows = [{"prompt": f"Question {i}?", "completion": "yes yes" if i % 2 else "no no", "label": bool(i % 2)}
            for i in range(12)]  # fmt: skip
    rows.insert(3, {"prompt": "Q?", "completion": "", "label": True})  # an empty answer: skipped, counted
    data = write_rows(tmp_path / "kto.jsonl", rows)
    changes = {"train.objective": "kto", "train.method": "lora", "model.block_size": 64, "train.max_steps": 6}
    run = train_in_process(adapt_config(folder, data, changes), "kto")
    assert losses(run)[0] == pytest.approx(0.5, abs=1e-6)  # 1 − σ(0): the policy is its reference
    assert losses(run)[-1] < losses(run)[0]
    from studio.data.prepare import list_datasets

    (dataset,) = list_datasets()
    assert dataset.meta.row_format == "unpaired" and dataset.meta.documents.dropped == {"empty_answer": 1}
    from studio.errors import StudioError

    with pytest.raises(StudioError, match="learns from pairs"):
        train_in_process(adapt_config(folder, data, changes | {"train.objective": "dpo"}), "dpo")


def test_dpo_equals_trls_trainer(tiny, tmp_path):
    """TRL 1.16's DPOTrainer (sigmoid loss, a reference model of other weights) tokenizes and collates four
    conversational pairs; the studio's DPO on that very batch (ids, and targets where TRL's completion mask is 1) has
    TRL's `compute_loss` and its gradients, to 1e-5."""
    import copy

    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    folder, base = tiny
    policy, reference = copy.deepcopy(base).train(), copy.deepcopy(base).eval()
    with torch.no_grad():  # a reference apart from the policy, so that the loss is not ln 2
        for parameter in reference.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    rows = [
        {"prompt": [{"role": "user", "content": f"Question {i}?"}],
         "chosen": [{"role": "assistant", "content": "yes yes" * (i + 1)}],
         "rejected": [{"role": "assistant", "content": "no"}]}
        for i in range(4)
    ]  # fmt: skip
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, report_to=[], use_cpu=True, bf16=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    trainer = DPOTrainer(
        policy, reference, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_loss(policy, batch)
    theirs_grad = torch.autograd.grad(theirs, list(policy.parameters()))

    x = batch["input_ids"]
    y = torch.where(batch["completion_mask"][:, 1:] > 0, x[:, 1:], IGNORE)
    y = torch.cat([y, torch.full((len(y), 1), IGNORE)], dim=1)  # targets beside their inputs
    logps, tokens = answer_logps(policy(x).logits, y)
    with torch.no_grad():
        reference_logps = answer_logps(reference(x).logits, y)[0]
    terms = pair_losses(
        "dpo", train_keys(beta=0.1), (logps[:4], logps[4:], tokens[:4], tokens[4:]), reference_logps.chunk(2)
    )
    ours = terms.loss.mean()
    ours_grad = torch.autograd.grad(ours, list(policy.parameters()))
    assert abs(ours.item() - LN2) > 1e-3
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_kto_equals_trls_trainer(tiny, tmp_path):
    """TRL 1.16's KTOTrainer (weights 1.5 and 0.7, a reference of other weights) collates four unpaired rows with
    their mismatched KL rows; the studio's KTO loss on that batch (z from the KL rows) has TRL's `compute_loss`."""
    import copy

    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    folder, base = tiny
    policy, reference = copy.deepcopy(base).train(), copy.deepcopy(base).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    rows = [
        {"prompt": [{"role": "user", "content": f"Question {i}?"}],
         "completion": [{"role": "assistant", "content": "yes " * (i + 1)}], "label": bool(i % 2)}
        for i in range(4)
    ]  # fmt: skip
    args = KTOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, desirable_weight=1.5, undesirable_weight=0.7,
                     report_to=[], use_cpu=True, bf16=False)  # fmt: skip
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    trainer = KTOTrainer(
        policy, reference, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    theirs = trainer.compute_loss(policy, batch)

    def logps_of(model, ids, mask):
        y = torch.where(mask[:, 1:] > 0, ids[:, 1:], IGNORE)
        return answer_logps(model(ids).logits, torch.cat([y, torch.full((len(y), 1), IGNORE)], dim=1))[0]

    with torch.no_grad():
        mismatched = batch["KL_input_ids"], batch["KL_completion_mask"]
        kl = (logps_of(policy, *mismatched) - logps_of(reference, *mismatched)).mean().clamp(min=0)
        reference_logps = logps_of(reference, batch["input_ids"], batch["completion_mask"])
    logps = logps_of(policy, batch["input_ids"], batch["completion_mask"])
    train = train_keys(beta=0.3, kto_desirable_weight=1.5, kto_undesirable_weight=0.7)
    ours = kto_losses(train, logps, reference_logps, batch["label"].bool(), kl)[0].mean()
    assert abs(ours.item() - 0.5 * (1.5 + 0.7) / 2) > 1e-4  # not the starting value
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)


def test_the_playgrounds_preference_file_prepares_as_it_is(tiny, studio_home, tmp_path, run_cli):
    """Choices the playground recorded (studio.playground_preferences) are a preference source for `prepare`."""
    from studio.data.prepare import list_datasets
    from studio.playground_preferences import Answer, preferences_file, record_preference

    folder, _ = tiny
    for i in range(5):
        prompt = [{"role": "user", "content": f"Question {i}?"}]
        record_preference(Answer(prompt, "yes yes", "sft", 100), Answer(prompt, "no no", "sft", "latest"))
    code, _, err = run_cli("prepare", preferences_file(), "--init-from", folder, "--block-size", 64,
                           "--objective", "dpo")  # fmt: skip
    assert code == 0, err
    (dataset,) = list_datasets()
    assert dataset.meta.row_format == "pairs" and dataset.meta.documents.kept == 5
    assert sum(dataset.meta.preference_rows().values()) == 5


@pytest.mark.asyncio
async def test_the_data_tab_prepares_a_preference_file_and_counts_its_rows_and_skipped_ones(
    tiny, studio_home, tmp_path
):
    from tests.test_app import SIZE, static_text
    from widgets.app import StudioApp
    from widgets.dataset_facts import DatasetFacts

    folder, _ = tiny
    rows = toy_rows(10) + [{"prompt": "Q?", "chosen": "same", "rejected": "same"}, {"prompt": "Q?", "chosen": "a"}]
    config = RunConfig()
    for key, value in (
        ("data.source", str(write_rows(tmp_path / "prefs.jsonl", rows))),
        ("train.init_from", str(folder)),
        ("train.objective", "dpo"),
        ("model.block_size", 64),
        ("data.val_fraction", 0.2),
    ):
        set_field(config, key, value)
    app = StudioApp(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause()
        facts = [" ".join(line.split()) for line in static_text(app.query_one(DatasetFacts)).splitlines()]
    assert "rows 10 kept of 12 seen" in facts
    assert "format pairs, 8 train · 2 val, 0 truncated" in facts
    assert "dropped chosen = rejected 1, missing a field 1" in facts
