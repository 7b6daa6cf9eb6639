"""GRPO from reward functions: the rewards (built-ins, the user's own function, an unknown one refused), the
group advantage and the clipped loss against a hand computation, no reference at β = 0, a toy task it learns,
and resume."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest
import torch

from studio.cli.parser import build_parser, train_command_line, train_config
from studio.config import RunConfig
from studio.errors import StudioError
from studio.model import token_logps
from studio.queue.sweep import plan_sweep
from studio.rewards import parse_rewards, score
from studio.run_folder.layout import EVENTS
from studio.train.objectives.grpo import clipped_surrogate, group_advantages
from tests.hf_models import CHATML, make_hf_model

# Hugging Face folders inspected in this process, which has torch already: no child per folder
pytestmark = pytest.mark.usefixtures("inspection_in_process")

pytest.importorskip("transformers")

LOWERCASE = "regex:[a-z]+"  # the toy task: answer with a word of lowercase letters


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("grpo") / "base"
    make_hf_model(folder, "llama", chat_template=CHATML)
    return folder


def write_prompts(path: Path, count: int = 40) -> Path:
    rows = [{"prompt": f"Word {i}?", "answer": str(i)} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def events(run_dir: Path, kind: str) -> list[dict]:
    every = [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines()]
    return [event for event in every if event["kind"] == kind]


# ---- rewards ---------------------------------------------------------------------------------------------------
def test_built_in_rewards_and_their_weights():
    exact, regex, length = parse_rewards(["exact:answer", "regex:\\d+", "0.5*length:4"])
    row = {"answer": "The answer is 42."}
    assert score([exact, regex, length], "p", "so 42", row) == [1.0, 0.0, 0.75]  # 5 characters of 4: 1 − 1/4
    assert score([exact, regex], "p", " 42 ", {"answer": "42"}) == [1.0, 1.0]
    assert score([exact], "p", "yes", {"answer": " yes "}) == [1.0]  # no number: the stripped texts
    assert score([exact], "p", "41", row) == [0.0]
    assert length.weight == 0.5 and length.name == "length:4"


def test_a_reward_holding_a_pipe_survives_config_toml_set_the_command_line_twin_and_a_sweep(studio_home, tmp_path):
    reward = "regex:^(yes|no)$"  # was split on its | into "regex:^(yes" and "no)$" by all but --reward and the file
    given = train_config(build_parser().parse_args(["train", "--objective", "grpo", "--reward", reward]))
    given.save(tmp_path / "config.toml")
    assert given.train.rewards == [reward] and RunConfig.load(tmp_path / "config.toml").train.rewards == [reward]
    twin = train_command_line(given)
    assert "--set 'train.rewards=regex:^(yes\\|no)$'" in twin
    assert train_config(build_parser().parse_args(shlex.split(twin)[1:])).train.rewards == [reward]
    swept = plan_sweep("rewards", given, ["train.rewards=regex:^(yes\\|no)$,exact:answer"])
    assert [config.train.rewards for _, config in swept] == [[reward], ["exact:answer"]]


def test_a_user_reward_function_from_a_file(tmp_path):
    file = tmp_path / "my_rewards.py"
    file.write_text(
        "def ends_with_answer(prompt, completion, row):\n    return float(completion.endswith(row['answer']))\n"
    )
    (reward,) = parse_rewards([f"{file}:ends_with_answer"])
    assert score([reward], "Q?", "it is 7", {"answer": "7"}) == [1.0]
    assert score([reward], "Q?", "it is 8", {"answer": "7"}) == [0.0]
    with pytest.raises(StudioError, match="defines no function missing"):
        parse_rewards([f"{file}:missing"])
    (file.parent / "side_effect.py").write_text("raise SystemExit('run')\n")  # checking a config never runs it
    assert parse_rewards([f"{file.parent / 'side_effect.py'}:f"], run_user_code=False)[0].function is None
    with pytest.raises(StudioError, match="no file"):
        parse_rewards([f"{tmp_path / 'absent.py'}:f"], run_user_code=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--reward", "bogus"], "unknown reward 'bogus'"),
        ([], "grpo needs rewards"),
        (
            [
                "--reward",
                "regex:(",
            ],
            "not a regular expression",
        ),
        (["--reward", "regex:a", "--set", "train.group_size=1"], "group_size must be 2 or more"),
        (["--reward", "regex:a", "--set", "train.grpo_iterations=0"], "grpo_iterations must be positive"),
        (["--reward", "regex:a", "--set", "train.precompute_reference=true"], "precompute_reference is for dpo"),
    ],
)
def test_bad_grpo_settings_are_refused_in_one_line(tiny, tmp_path, run_cli, args, message):
    data = write_prompts(tmp_path / "prompts.jsonl")
    code, _, err = run_cli("train", "--data", data, "--init-from", tiny, "--objective", "grpo", *args)
    assert code != 0 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1


# ---- the loss ---------------------------------------------------------------------------------------------------
def test_the_group_advantage_and_the_clipped_loss_equal_a_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    std = math.sqrt(1 / 3)  # unbiased: squared deviations 4 × 0.25, over 3
    a = 0.5 / (std + 1e-4)
    assert group_advantages(rewards).view(-1).tolist() == pytest.approx([a, -a, -a, a], rel=1e-6)
    # two answers of two tokens; the second answer's second token is padding (mask 0, whatever its values)
    old = torch.log(torch.tensor([[0.2, 0.5], [0.4, 0.3]]))
    ratios = torch.tensor([[1.5, 1.0], [0.5, 7.0]])
    logps = old + torch.log(ratios)
    mask = torch.tensor([[1, 1], [1, 0]])
    reference = logps + torch.tensor([[0.1, -0.2], [0.3, 9.0]])  # log π_ref − log π per token
    terms = clipped_surrogate(logps, old, reference, torch.tensor([a, -a]), mask, epsilon=0.2, beta=0.5)

    def k3(q: float) -> float:
        return math.exp(q) - q - 1

    first = ((-1.2 * a + 0.5 * k3(0.1)) + (-1.0 * a + 0.5 * k3(-0.2))) / 2  # 1.5 clipped to 1.2; 1.0 as it is
    second = 0.8 * a + 0.5 * k3(0.3)  # A < 0: min(0.5·A, 0.8·A) = 0.8·A, the loss its negative
    assert terms.loss.tolist() == pytest.approx([first, second], rel=1e-5)
    assert terms.kl.tolist() == pytest.approx([(k3(0.1) + k3(-0.2)) / 2, k3(0.3)], rel=1e-5)
    assert terms.clipped.tolist() == pytest.approx([0.5, 1.0])
    without = clipped_surrogate(logps, old, None, torch.tensor([a, -a]), mask, epsilon=0.2, beta=0.5)
    assert without.loss.tolist() == pytest.approx([(-1.2 * a - a) / 2, 0.8 * a], rel=1e-5)


def test_the_clipped_loss_after_an_update_equals_trls(tiny, tmp_path, monkeypatch):
    """μ > 1: at an update after the first, π_old is the weights that sampled the answers, not π. TRL 1.16's
    GRPOTrainer (loss_type grpo, num_iterations 2, β 0.1; the KL term DeepSeekMath's k3, not weighed by the ratio,
    which TRL 1.16 does by default) takes its `_compute_loss` on four answers of a tiny Llama with old and reference
    log-probabilities apart from the policy's; the studio's clipped surrogate on the same tokens has TRL's loss and
    gradients, to 1e-5, and some of its ratios are clipped."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    trl = pytest.importorskip("trl")
    assert trl.__version__ == "1.16.0"
    import transformers
    from datasets import Dataset

    policy = transformers.AutoModelForCausalLM.from_pretrained(tiny).train()
    args = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"), loss_type="grpo", num_iterations=2, beta=0.1, epsilon=0.2,
        use_bias_correction_kl=False, per_device_train_batch_size=4, num_generations=4, report_to=[], use_cpu=True,
        bf16=False,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        policy, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_list([{"prompt": "Word?"}] * 4),
        processing_class=transformers.AutoTokenizer.from_pretrained(tiny),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    prompts = torch.randint(4, 300, (4, 5), generator=generator)
    completions = torch.randint(4, 300, (4, 6), generator=generator)
    completion_mask = (torch.arange(6) < torch.tensor([[6], [4], [5], [2]])).long()  # answers of different lengths
    advantages = torch.tensor([1.0, -0.5, 0.3, -0.8])
    ids = torch.cat([prompts, completions], 1)
    x, targets = ids[:, :-1], ids[:, 1:]
    mask = torch.cat([torch.zeros(4, 4, dtype=torch.long), completion_mask], 1)  # completion tokens' targets
    logps = token_logps(policy(x).logits, targets)
    shifts = torch.randn(logps.shape, generator=generator)
    old = (logps - 0.3 * shifts).detach()  # the sampling weights': ratios e^{±0.3} and so on, some clipped
    reference = (logps + 0.2 * torch.randn(logps.shape, generator=generator)).detach()
    inputs = {
        "prompt_ids": prompts, "prompt_mask": torch.ones_like(prompts), "completion_ids": completions,
        "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old[:, 4:],
        "ref_per_token_logps": reference[:, 4:],
    }  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before each step
    theirs = trainer._compute_loss(policy, inputs)
    theirs_grad = torch.autograd.grad(theirs, list(policy.parameters()))
    terms = clipped_surrogate(logps, old, reference, advantages, mask, epsilon=0.2, beta=0.1)
    ours = terms.loss.mean()
    ours_grad = torch.autograd.grad(ours, list(policy.parameters()))
    assert 0 < terms.clipped.mean() < 1
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    for a, b in zip(ours_grad, theirs_grad):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_beta_zero_builds_no_reference_and_the_estimate_counts_none(tiny, studio_home, tmp_path):
    from studio.runs.prepare import prepare_run
    from studio.sizing.sizes import run_sizes
    from studio.train.trainer import Trainer
    from tests.test_adapt import adapt_config

    data = write_prompts(tmp_path / "prompts.jsonl")
    for beta, name in ((0.0, "without"), (0.1, "with")):
        config = adapt_config(tiny, data, {"train.objective": "grpo", "train.rewards": [LOWERCASE], "train.beta": beta})
        trainer = Trainer(prepare_run(config, name))
        assert (trainer.objective.reference is None) == (beta == 0)
        assert bool(trainer.frozen_weights) == (beta > 0)  # full fine-tuning: a frozen copy when β > 0
        sized = RunConfig()  # the estimate of a studio model of the same method and objective
        sized.train.objective, sized.train.beta, sized.model.vocab_size = "grpo", beta, 320
        assert (run_sizes(sized, None).memory["reference"] > 0) == (beta > 0)


# ---- learning, end to end --------------------------------------------------------------------------------------
def grpo_changes(steps: int) -> dict:
    """A toy a tiny random model learns in seconds: one-token answers rewarded when they are a lowercase word
    (about a quarter of its first answers are)."""
    return {
        "train.objective": "grpo", "train.rewards": [LOWERCASE], "train.max_completion_tokens": 1,
        "train.group_size": 8, "train.batch_size": 4, "train.max_steps": steps, "model.block_size": 64,
        "train.beta": 0.0, "data.val_fraction": 0.4, "train.log_interval": 4, "train.eval_interval": steps,
        "train.sample_interval": steps,
    }  # fmt: skip


@pytest.mark.slow
def test_grpo_raises_the_reward_of_a_checkable_task(tiny, studio_home, tmp_path, monkeypatch):
    from studio.run_folder.history import History
    from studio.train.objectives import grpo
    from tests.test_adapt import adapt_config, train_in_process

    batches = []  # each sampling call's rows and padding: a transformers policy answers a step's prompts together
    real_sample = grpo.sample

    def sample(model, ids, *args, pads=None, **kwargs):
        batches.append((len(ids), 0 if pads is None else int(pads.max())))
        return real_sample(model, ids, *args, pads=pads, **kwargs)

    monkeypatch.setattr(grpo, "sample", sample)
    data = write_prompts(tmp_path / "prompts.jsonl")
    run_dir = train_in_process(adapt_config(tiny, data, grpo_changes(20)), "grpo")
    steps = [padding for rows, padding in batches if rows == 4 * 8]  # 4 prompts, 8 answers each
    assert len(steps) == 20 and max(steps) > 0  # one batch a step, of prompts of several lengths
    evals = events(run_dir, "eval")
    assert evals[0]["val_reward"] <= 0.5  # the start: the untrained model's held-out answers
    assert evals[-1]["val_reward"] >= 0.8 and evals[-1]["val_rewards"][LOWERCASE] == evals[-1]["val_reward"]
    trained = events(run_dir, "train")
    assert trained[0]["reward"] < trained[-1]["reward"]
    assert {"reward_std", "completion_len", "kl", "clip_fraction", "generation_s", "update_s"} <= set(trained[-1])
    assert trained[-1]["completion_len"] == 1 and trained[-1]["kl"] == 0
    history = History()
    history.read(run_dir)
    assert history.series["val_reward"].last() == evals[-1]["val_reward"]  # the run's chart draws it
    last_samples = events(run_dir, "sample")[-1]["samples"]
    assert all(set(sample["rewards"]) == {LOWERCASE} for sample in last_samples)


@pytest.mark.slow
def test_a_grpo_run_with_lora_exports_merged_with_its_trained_logits(tiny, studio_home, tmp_path, run_cli):
    """GRPO for 2 steps (a KL term: the reference is the base, adapters off), exported merged: transformers reloads
    the logits of the studio's own model of the run, which are not the base's."""
    from transformers import AutoModelForCausalLM

    from tests.test_adapt import adapt_config, logit_gap, train_in_process

    data = write_prompts(tmp_path / "prompts.jsonl", 12)
    changes = grpo_changes(2) | {"train.method": "lora", "train.lr": 2e-2, "train.beta": 0.1}
    train_in_process(adapt_config(tiny, data, changes), "grpo")
    text = "Word 99? abc"
    assert logit_gap("grpo", AutoModelForCausalLM.from_pretrained(tiny).eval(), text) > 1e-3  # the policy moved
    merged = tmp_path / "merged"
    assert run_cli("export", "grpo", "--out", merged)[0] == 0
    reloaded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    assert logit_gap("grpo", reloaded, text) < 1e-4


def test_prompt_rows_prepare_with_their_fields_and_rows_without_a_prompt_are_skipped(tiny, tmp_path, run_cli):
    from studio.data.prepare import open_dataset
    from studio.data.prompts import read_rows
    from studio.paths import datasets_dir

    data = write_prompts(tmp_path / "prompts.jsonl", 10)
    with data.open("a", encoding="utf-8") as rows:
        rows.write(json.dumps({"question": "no prompt"}) + "\n")
        rows.write(json.dumps({"prompt": [{"role": "user", "content": "Last?"}], "answer": "x"}) + "\n")
    code, _, err = run_cli("prepare", data, "--init-from", tiny, "--objective", "grpo", "--val-fraction", 0.2)
    assert code == 0, err
    (folder,) = datasets_dir().iterdir()
    dataset = open_dataset(folder.name)
    assert dataset.meta.row_format == "prompts" and dataset.meta.documents.dropped == {"missing_field": 1}
    train, val = read_rows(dataset.path / "train.rows"), read_rows(dataset.path / "val.rows")
    assert len(train) + len(val) == 11 and val[-1]["answer"] == "x" and train[0] == {"prompt": "Word 0?", "answer": "0"}
    code, _, err = run_cli("prepare", data, "--init-from", tiny, "--objective", "grpo", "--strict")
    assert code != 0 and "without a prompt" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("iterations", [1, 2])
def test_six_steps_equal_three_then_resume_then_three(tiny, studio_home, tmp_path, iterations):
    """Bit-identical after stop and resume: the prompts drawn and the answers sampled continue (the sampling seed
    is the stream's position). With μ = 2 updates per sampled batch the checkpoint of step 3 falls between the two
    updates of the second batch: it holds that batch's answers, which the resumed run learns from again; the
    first update of a batch has ratio 1 (nothing clipped), the second one not."""
    from safetensors.torch import load_file

    from studio.run_folder.layout import CHECKPOINTS, checkpoint_name
    from studio.train.objectives.grpo import SampledBatch
    from tests.test_adapt import adapt_config, straight_and_resumed

    data = write_prompts(tmp_path / "prompts.jsonl", 12)
    changes = grpo_changes(6) | {"train.checkpoint_interval": 3, "train.log_interval": 1, "train.beta": 0.1}
    changes |= {"train.batch_size": 2, "train.group_size": 4, "train.max_completion_tokens": 3}
    changes |= {"train.grpo_iterations": iterations, "train.grpo_epsilon": 0.002, "train.rewards": ["length:6"]}
    # (a reward the untrained answers differ by, so that advantages are not all 0 and ratios get clipped)
    straight, halves = straight_and_resumed(adapt_config(tiny, data, changes), stop_at=3)
    stopped = halves / CHECKPOINTS / checkpoint_name(3)  # what the resume started from
    held = {key for key in load_file(stopped / "rng-rank0.safetensors") if key.startswith("held.")}
    assert held == (set() if iterations == 1 else {f"held.0.{name}" for name in SampledBatch.HELD + ("tokens",)})
    rewards = [event["reward"] for event in events(straight, "train")]
    assert rewards[3:] == [event["reward"] for event in events(halves, "train")][3:]
    clipped = [event["clip_fraction"] for event in events(straight, "train")]
    assert clipped[::iterations] == [0] * (6 // iterations)  # a batch's first update: π is π_old
    assert all(fraction > 0 for index, fraction in enumerate(clipped) if index % iterations)


@pytest.mark.slow
def test_grpo_from_the_command_line_with_a_user_reward_then_generate_and_export(tiny, tmp_path, run_cli):
    data = write_prompts(tmp_path / "prompts.jsonl", 12)
    rewards = tmp_path / "rewards.py"
    rewards.write_text("def short(prompt, completion, row):\n    return float(len(completion) <= 3)\n")
    code, _, err = run_cli(
        "train", "--data", data, "--init-from", tiny, "--objective", "grpo", "--reward", f"{rewards}:short",
        "--reward", "0.5*exact:answer", "--group-size", 4, "--max-steps", 2, "--name", "cli-grpo",
        "--set", "train.max_completion_tokens=4", "--set", "model.block_size=64", "--set", "train.log_interval=1",
        "--set", "train.batch_size=2",
    )  # fmt: skip
    assert code == 0, err
    from studio.run_folder.layout import run_path

    trained = events(run_path("cli-grpo"), "train")
    assert set(trained[-1]["rewards"]) == {f"{rewards}:short", "exact:answer"}
    assert 0 < trained[-1]["completion_len"] <= 4
    code, out, err = run_cli("generate", "cli-grpo", "--prompt", "Word 1?", "--max-new-tokens", 3)
    assert code == 0, err
    assert run_cli("export", "cli-grpo", "--out", tmp_path / "exported")[0] == 0
    # evaluate on prompt rows: one greedy answer each, scored by the run's rewards, or by --reward (which wins)
    code, out, err = run_cli("evaluate", "cli-grpo", "--data", data, "--json")
    assert code == 0, err
    scored = json.loads(out)
    assert scored["kind"] == "rewards" and scored["prompts"] == 12 and 0 < scored["completion_len"] <= 4
    assert set(scored["rewards"]) == {f"{rewards}:short", "exact:answer"}
    weighted = scored["rewards"][f"{rewards}:short"] + 0.5 * scored["rewards"]["exact:answer"]
    assert scored["reward"] == pytest.approx(weighted, abs=1e-6)
    given = ["--reward", "length:2", "--max-new-tokens", 4, "--json"]
    code, out, err = run_cli("evaluate", "cli-grpo", "--data", data, *given)
    assert code == 0, err
    by_run = json.loads(out)
    assert set(by_run["rewards"]) == {"length:2"} and by_run["completion_len"] == scored["completion_len"]
    code, out, err = run_cli("evaluate", tmp_path / "exported", "--data", data, *given)
    assert code == 0, err
    assert json.loads(out) == by_run  # the export answers as the run does
    code, _, err = run_cli("evaluate", tmp_path / "exported", "--data", data)  # a folder names no rewards
    assert code != 0 and "give --reward" in err and len(err.strip().splitlines()) == 1
    text = tmp_path / "text.txt"
    text.write_text("Plain text, no prompt rows.\n" * 20, encoding="utf-8")
    code, _, err = run_cli("evaluate", "cli-grpo", "--data", text, "--reward", "length:2")
    assert code != 0 and "drop them" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_checkpoint_with_dropout_starts_at_zero_kl_from_its_reference(studio_home, tmp_path):
    """A GPT-2 checkpoint (10% dropout): with the model's own dropout off, the first step's policy is its
    reference, so the k3 KL of the first train event is exactly 0."""
    from tests.test_adapt import adapt_config, train_in_process

    folder = tmp_path / "gpt2"
    make_hf_model(folder, "gpt2", chat_template=CHATML)
    changes = grpo_changes(1) | {"train.beta": 0.1, "train.log_interval": 1, "train.max_completion_tokens": 3}
    run_dir = train_in_process(adapt_config(folder, write_prompts(tmp_path / "prompts.jsonl", 12), changes), "kl")
    assert events(run_dir, "train")[0]["kl"] == 0
