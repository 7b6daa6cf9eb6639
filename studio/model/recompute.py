"""Cheap steps recomputed in the backward instead of kept from the forward (train.lean_activations).

Autograd keeps, for the backward, the inputs of every step that needs them. Two steps keep a whole layer-wide
tensor each for almost no compute, and at a long context they are most of what a LoRA step holds (measured with
autograd's saved tensors on a Qwen2.5-0.5B-shaped layer at context 2048: 190 of its 283 MiB are 4864-wide MLP
tensors, 42 MiB dropout's copies of 896-wide inputs):

- LoRA's dropout: peft computes `lora_B(lora_A(dropout(x)))`, so each adapted layer keeps its own dropped-out copy of
  its input for lora_A's gradient, and on a CPU its dropout mask beside it, in fp32: two input-sized tensors per
  adapted layer (q, k and v each make theirs of the same input). Here lora_A runs the dropout inside a checkpoint,
  which keeps the input (one tensor, shared by the layers that read it) and the random generator's state, and
  draws the same mask again in the backward, four values per 64-bit random draw (quick_dropout).
- A gated MLP's activation, `act(gate) * up`: autograd keeps gate for the activation's gradient and act(gate) and up
  for the product's, three intermediate-wide tensors. Inside a checkpoint it keeps gate and up and recomputes the
  activation and the product.

The forward and the gradients are the same, bit for bit, as peft's layers drawing the same masks (quick_dropout's):
the checkpoint restores the generator's state before it redraws a mask. The recomputation costs an elementwise pass,
a mask's draw and a rank-wide matmul per adapted layer, against the layers' full matmuls. It is not applied to a private
run (TrainConfig.recomputes_cheap_steps): Opacus takes each example's gradient from hooks on each layer's module, which
would see lora_A's input without its dropout.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# transformers' gated MLP forward (Llama, Mistral, Qwen2/3, Gemma 1/2/3 write it so), matched to the character: only
# a forward known to compute exactly this is replaced
GATED_MLP_FORWARD = """\
def forward(self, x):
    down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
    return down_proj
"""


def keep_fewer_activations(model: nn.Module) -> None:
    """Recompute LoRA's dropout and gated MLPs' activations in the backward, everywhere in `model` (the studio's own
    decoders, or a transformers model, under peft or not)."""
    for module in model.modules():
        if hasattr(module, "recompute_product"):  # the studio's own gated MLP (studio.model.llama)
            module.recompute_product = True
        elif _transformers_gated_mlp(type(module)):
            module.forward = types.MethodType(_gated_mlp_forward, module)
        elif _lora_layer(module):
            _recompute_lora_dropout(module)


def gated_product(act, gate: torch.Tensor, up: torch.Tensor, recompute: bool) -> torch.Tensor:
    """act(gate) * up; with `recompute`, autograd keeps gate and up alone and recomputes the rest in the backward."""
    if not recompute or not torch.is_grad_enabled():
        return act(gate) * up
    return checkpoint(_product, act, gate, up, use_reentrant=False, preserve_rng_state=False)  # nothing random


def _product(act, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return act(gate) * up


def _gated_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """GATED_MLP_FORWARD, with the product recomputed in the backward."""
    return self.down_proj(gated_product(self.act_fn, self.gate_proj(x), self.up_proj(x), recompute=True))


@functools.cache
def _transformers_gated_mlp(cls: type) -> bool:
    if not cls.__module__.startswith("transformers."):
        return False
    try:
        return textwrap.dedent(inspect.getsource(cls.forward)) == GATED_MLP_FORWARD
    except (OSError, TypeError):  # no source to read: leave its forward alone
        return False


# ---- LoRA's dropout --------------------------------------------------------------------------------------------
class DroppedLinear(nn.Linear):
    """peft's lora_A with the adapter's dropout inside it: `linear(quick_dropout(x))`, the dropped-out copy recomputed
    in the backward from x and the generator's state. The same weight (its name in checkpoints unchanged)."""

    def __init__(self, linear: nn.Linear, p: float):
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.p = linear.in_features, linear.out_features, p
        self.weight = linear.weight
        self.register_parameter("bias", linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight, self.bias)
        if not torch.is_grad_enabled():
            return self._dropped(x)
        return checkpoint(self._dropped, x, use_reentrant=False)

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(quick_dropout(x, self.p), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.p} (recomputed)"


def quick_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout whose mask costs a quarter of a random draw per value: each 64-bit draw gives four 16-bit lanes, a
    value dropped where its lane falls under p's share of 65,536 (p rounded to 1/65,536, and the kept values scaled by
    that rounded share, so the expectation stays x). The redraw in the backward makes the mask's cost count twice;
    torch's dropout draws once per value (on this project's CPU: 3.6 ms against 10 ms for 2048 × 896 values)."""
    dropped_lanes = min(round(p * 65536), 65535)  # a p within half a lane of 1 keeps one lane (and a finite scale)
    if dropped_lanes == 0:
        return x
    draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    lanes = draws.view(torch.int16)[: x.numel()].view(x.shape)
    kept = lanes >= dropped_lanes - 32768  # lanes are uniform over [-32768, 32767]
    # the scale folded into the mask: a Python number times x would leave autograd an 8-byte tensor per call
    return x * kept.to(x.dtype).mul_(65536 / (65536 - dropped_lanes))


def _lora_layer(module: nn.Module) -> bool:
    """A peft LoRA layer on a linear layer (its dropout and lora_A read the layer's input)."""
    return type(module).__module__.startswith("peft.tuners.lora") and isinstance(
        getattr(module, "lora_A", None), nn.ModuleDict
    )


def _recompute_lora_dropout(layer: nn.Module) -> None:
    """Move each plain LoRA adapter's dropout into its lora_A (DroppedLinear); DoRA's variant reads the dropped-out
    input itself and keeps its dropout."""
    for name, dropout in layer.lora_dropout.items():
        lora_a = layer.lora_A[name]
        if name in getattr(layer, "lora_variant", {}) or not isinstance(dropout, nn.Dropout) or dropout.p == 0:
            continue
        if type(lora_a) is nn.Linear:
            layer.lora_A[name] = DroppedLinear(lora_a, dropout.p)
            layer.lora_dropout[name] = nn.Identity()
