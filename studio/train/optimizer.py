"""The optimizer a run trains with (`train.optimizer`): AdamW, SGD, or Muon with AdamW.

`muon` is modded-nanogpt's recipe: `torch.optim.Muon` (momentum, then the update orthogonalised by Newton-Schulz
iterations) on the hidden weight matrices (`model.hidden_matrices`), AdamW on everything else; `ShapeBatchedMuon`
runs the iterations of same-shaped matrices as one batch, as modded-nanogpt does. The two are one
optimizer to the trainer, to Accelerate and to checkpoints (`MuonWithAdamW`). The schedule sets every group's
lr as `lr_at(step) * lr_scale`, so Muon's groups, scaled by muon_lr / lr, follow the same curve.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.optim._muon import _adjust_lr

from studio.config import TrainConfig
from studio.errors import StudioError
from studio.model import decay_groups, hidden_matrices, param_groups

LR_SCALE = "lr_scale"  # a group's lr relative to the schedule's (absent: 1)


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    if train.optimizer == "sgd":
        return torch.optim.SGD(param_groups(model, train.weight_decay), lr=train.lr, momentum=train.momentum)
    if train.optimizer == "muon":
        return muon_with_adamw(model, train)
    return adamw(param_groups(model, train.weight_decay), train)


def adamw(groups: list[dict], train: TrainConfig) -> torch.optim.AdamW:
    betas = (train.beta1, train.beta2)
    try:  # the fused kernel is fastest wherever the device has one
        return torch.optim.AdamW(groups, lr=train.lr, betas=betas, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=train.lr, betas=betas)


def muon_with_adamw(model: nn.Module, train: TrainConfig) -> MuonWithAdamW:
    matrices = hidden_matrices(model)
    if not matrices:
        raise StudioError("train.optimizer muon: this model has no hidden linear layers to orthogonalise; use adamw")
    orthogonalised = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in orthogonalised]
    muon_group = {"params": matrices, LR_SCALE: train.muon_lr / train.lr}
    muon = ShapeBatchedMuon(
        [muon_group],
        lr=train.muon_lr,
        weight_decay=train.weight_decay,
        momentum=train.momentum,
        nesterov=True,
        ns_steps=train.muon_ns_steps,
    )
    return MuonWithAdamW(muon, adamw(decay_groups(rest, train.weight_decay), train))


class ShapeBatchedMuon(torch.optim.Muon):
    """torch.optim.Muon (its arguments, groups, state and checks), whose step runs the Newton-Schulz iterations of
    every same-shaped matrix of a group as one batch of matrix products: the same updates, bit for bit on a CPU, in
    fewer and larger products. On speedrun-cpu's 28 matrices (three shapes) the iterations took 0.55x the time of
    one matrix at a time (10 ms against 19 ms a step, 2 CPU cores), a tenth of its step."""

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)  # the momentum buffers, made on the first step
            updates = [momentum_update(grad, buffer, group["momentum"], group["nesterov"])
                       for grad, buffer in zip(grads, buffers)]  # fmt: skip
            same_shape = defaultdict(list)
            for index, param in enumerate(params):
                same_shape[param.shape].append(index)
            lr, decay = float(group["lr"]), group["weight_decay"]
            for indices in same_shape.values():
                stacked = torch.stack([updates[i] for i in indices])
                ortho = orthogonalised(stacked, group["ns_coefficients"], group["ns_steps"], group["eps"])
                for index, update in zip(indices, ortho):
                    param = params[index]
                    param.mul_(1 - lr * decay)
                    param.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], param.shape))


def momentum_update(grad: torch.Tensor, buffer: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
    """Muon's momentum: the buffer moved toward the gradient (in place), then Nesterov's look-ahead or the buffer."""
    buffer.lerp_(grad, 1 - momentum)
    return grad.lerp(buffer, momentum) if nesterov else buffer


def orthogonalised(
    updates: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """torch.optim.Muon's Newton-Schulz iterations (its quintic, in bf16, each matrix scaled to Frobenius norm 1,
    the wide orientation iterated) on a batch (N, rows, cols) of same-shaped updates."""
    a, b, c = coefficients
    ortho = updates.bfloat16()
    tall = ortho.size(1) > ortho.size(2)
    if tall:
        ortho = ortho.mT
    ortho = ortho / ortho.norm(dim=(1, 2), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = ortho @ ortho.mT
        ortho = torch.baddbmm(ortho, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), ortho, beta=a)
    return ortho.mT if tall else ortho


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr for this step, on every group at its scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get(LR_SCALE, 1.0)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon and AdamW stepped as one optimizer. It is an Optimizer for `isinstance`'s sake (Accelerate prepares
    only those), but holds no groups of its own: its groups and state are its two parts', Muon's first, and its
    state dict numbers their parameters on from one to the other, as a single optimizer would."""

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):  # no super().__init__: the parts own all
        self.parts = (muon, adamw)
        self.defaults = adamw.defaults

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # the parts' own dicts: setting a group's lr reaches its part
        return [group for part in self.parts for group in part.param_groups]

    @property
    def state(self) -> dict[torch.Tensor, Any]:
        return {param: values for part in self.parts for param, values in part.state.items()}

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state, groups, offset = {}, [], 0
        for part in self.parts:
            saved = part.state_dict()
            state.update({offset + index: values for index, values in saved["state"].items()})
            groups += [{**group, "params": [offset + i for i in group["params"]]} for group in saved["param_groups"]]
            offset += sum(len(group["params"]) for group in saved["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups, offset = list(state_dict["param_groups"]), 0
        for part in self.parts:
            mine, groups = groups[: len(part.param_groups)], groups[len(part.param_groups) :]
            indices = [i for group in mine for i in group["params"]]
            part.load_state_dict(
                {
                    "state": {i - offset: state_dict["state"][i] for i in indices if i in state_dict["state"]},
                    "param_groups": [{**group, "params": [i - offset for i in group["params"]]} for group in mine],
                }
            )
            offset += len(indices)
