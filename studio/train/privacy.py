"""Differentially private training (DP-SGD) through Opacus: each example's gradient clipped to
`train.privacy_max_grad_norm`, Gaussian noise of `train.privacy_noise_multiplier` times that norm added to their sum,
batches Poisson-sampled (studio.data.batches.PoissonStream), and the privacy spent counted by Opacus's RDP
accountant at `train.privacy_delta`.

Per-example gradients come from Opacus's GradSampleModule (its hooks on the layers it knows, functorch for the rest);
only parameters that require grad get them, so under LoRA only the adapters are private. DPOptimizer clips, adds the
noise and divides by the expected batch size, then the run's optimizer steps. Each example's loss is its summed loss
over its learned targets divided by the targets a row can hold (`loss_divisor`): a function of that example
alone, as clipping requires (the studio's usual division by the step's learned targets would tie every example's
gradient to the others in its batch). The accountant's history lives in the training state (`privacy_history`), so
a checkpoint carries it and a resumed run's ε continues; a resumed run keeps the noise it started with.
"""

from __future__ import annotations

from typing import Any

import torch

from studio.checkpoints.training_state import TrainingState
from studio.config import RunConfig, TrainConfig
from studio.errors import StudioError

try:  # an optional extra: the trainer imports this module for private runs only
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from opacus.validators import ModuleValidator
except ImportError:
    raise StudioError("differentially private training needs Opacus: pip install 'llm-studio[privacy]'") from None

# Past this noise (its standard deviation against one clipped gradient) a batch learns nothing worth its steps; it
# also bounds the search for the least noise, which never ends for an ε below what any noise reaches.
MOST_NOISE = 50.0


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """The ε that `steps` steps of this noise and sampling rate spend at δ, by the RDP accountant."""
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)] if steps else []
    return accountant.get_epsilon(delta=delta)


def planned_noise(train: TrainConfig, sample_rate: float) -> float:
    """The run's noise multiplier: the one given, else the least that keeps max_steps within privacy_epsilon.
    A budget the planned steps cannot meet is refused in one line saying what to change."""
    steps, delta, target = train.max_steps, train.privacy_delta, train.privacy_epsilon
    noise = train.privacy_noise_multiplier
    if noise and target:
        spent = epsilon_spent(noise, sample_rate, steps, delta)
        if spent > target:
            within = _steps_within(noise, sample_rate, delta, target)
            fewer = f"take at most {within} steps, " if within else "even one step spends more: "
            raise StudioError(
                f"train.privacy_noise_multiplier {noise} spends ε {spent:.3g} over {steps} steps, more than "
                f"train.privacy_epsilon {target}: {fewer}raise the noise or privacy_epsilon, or set the noise to 0 "
                "for the least that meets ε"
            )
    if noise:
        return noise
    least_spent = epsilon_spent(MOST_NOISE, sample_rate, steps, delta)
    if least_spent > target:
        raise StudioError(
            f"train.privacy_epsilon {target} cannot be met by {steps} steps at sampling rate {sample_rate:.3g} "
            f"(batch over the units sampled from): even noise {MOST_NOISE:g} spends ε {least_spent:.3g}; raise "
            "privacy_epsilon or privacy_delta, or take fewer steps or a smaller batch"
        )
    return get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=sample_rate, steps=steps)


def _steps_within(noise: float, sample_rate: float, delta: float, target: float) -> int:
    """The most steps of this noise and sampling rate whose ε stays within target (ε grows with the steps)."""
    low, high = 0, 1
    while epsilon_spent(noise, sample_rate, high, delta) <= target:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if epsilon_spent(noise, sample_rate, middle, delta) <= target else (low, middle)
    return low


# Layers Opacus's ModuleValidator passes whose per-example gradients still fail (in functorch, Opacus 1.6)
UNVALIDATED = (torch.nn.RNN, torch.nn.GRU)


def check_supported(model: torch.nn.Module) -> None:
    """Opacus's ModuleValidator on the model, and the layers it passes but cannot make private: named in one line."""
    problems = [str(problem).split(". ")[0] for problem in ModuleValidator.validate(model, strict=False)]
    problems += [f"nn.{type(module).__name__} ({name}) has no per-example gradients in Opacus"
                 for name, module in model.named_modules() if type(module) in UNVALIDATED]  # fmt: skip
    if problems:
        reasons = "; ".join(problems)
        raise StudioError(f"differentially private training: Opacus cannot handle this model ({reasons}); train "
                          "a llama, gpt2 or Hugging Face model, or without privacy")  # fmt: skip


class PrivateTraining:
    """One run's DP-SGD: the model and optimizer wrapped by Opacus, the noise, and the accountant of the privacy
    spent, whose history is the training state's."""

    def __init__(self, config: RunConfig, sample_rate: float):
        self.train, self.sample_rate = config.train, sample_rate
        # an example's loss is its summed loss over the targets a row can hold (one label for a classifier)
        self.loss_divisor = 1 if config.train.task == "classify" else config.model.block_size
        self.noise_multiplier = 0.0  # set by start(): planned, or the resumed run's own
        self.accountant = RDPAccountant()
        self.optimizer: DPOptimizer | None = None

    def wrap(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[GradSampleModule, DPOptimizer]:
        """The model computing per-example gradients (of what requires grad) and the optimizer that clips them,
        adds the noise and averages over the expected batch before the run's optimizer steps."""
        check_supported(model)
        private_model = GradSampleModule(model, loss_reduction="sum", strict=False)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.train.privacy_max_grad_norm,
            expected_batch_size=self.train.batch_size,
            loss_reduction="mean",
        )
        return private_model, self.optimizer

    def start(self, state: TrainingState) -> None:
        """Account into the state's history (checkpoints carry it): a fresh run takes the planned noise, a resumed
        one the noise its history holds."""
        self.accountant.history = state.privacy_history
        history = state.privacy_history
        self.noise_multiplier = history[-1][0] if history else planned_noise(self.train, self.sample_rate)
        if self.optimizer is not None:
            self.optimizer.noise_multiplier = self.noise_multiplier

    def step(self) -> None:
        """One private step taken: the accountant counts it."""
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def epsilon(self) -> float:
        """The ε spent so far at the run's δ."""
        return self.accountant.get_epsilon(delta=self.train.privacy_delta)

    def facts(self) -> dict[str, Any]:
        """What the run's `running` status event says of its privacy."""
        return {
            "noise_multiplier": round(self.noise_multiplier, 6),
            "sample_rate": self.sample_rate,
            "delta": self.train.privacy_delta,
            "max_grad_norm": self.train.privacy_max_grad_norm,
        }
