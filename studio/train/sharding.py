"""FSDP (`train.sharding = "fsdp"`): each of N processes holds 1/N of the weights, gradients and optimizer state.

PyTorch's FSDP2 (`fully_shard`), called here directly rather than through Accelerate's FSDP plugin: on CPUs
Accelerate wraps the model in DDP whatever its plugin says, and calling FSDP2 ourselves gives GPUs and the CPU test
machines one code path. Each repeated block (every member of an `nn.ModuleList`: the studio's blocks, transformers'
decoder layers) is a unit of its own, gathered whole just before it runs and freed after; the root unit holds the
rest (embeddings, final norm, head: a tied head stays tied); the root is the module the trainer calls, whose forward
gathers them for whatever runs inside it (the chunked loss calls a transformers decoder and head apart). Under bf16
the gathered weights are bf16 and gradients are reduced in fp32 (FSDP2's MixedPrecisionPolicy). Gradients are
reduce-scattered after every micro-step, so a process never holds them whole; turning that off between micro-steps
would save communication but keep every gradient whole until the step's last one, a quarter of what sharding saves.

Checkpoints stay what one process writes: every tensor is gathered whole, one at a time, and the process that writes
the folder keeps it on the CPU (`gathered`), so export, generate and resume with any number of processes read them
as they are. On resume every process reads the whole weights before sharding, and takes its slice of the optimizer's
state without communicating (`sharded_optimizer_state`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# FSDP and DTensor are imported where a sharded run needs them: importing torch.distributed.tensor would slow the
# start of every trainer. A DTensor cannot exist before it is imported, which `is_sharded` relies on.
DTENSOR_MODULE = "torch.distributed.tensor"


def shard(model: nn.Module, precision: str) -> None:
    """Shard `model` in place between the processes of the default process group: each block, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    options = {}
    if precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in reversed(list(model.modules())):  # FSDP2 wants the innermost units sharded first
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, **options)
    fully_shard(model, **options)


def units(model: nn.Module) -> list[nn.Module]:
    """The sharded units (FSDPModule) of a sharded model."""
    from torch.distributed.fsdp import FSDPModule

    return [module for module in model.modules() if isinstance(module, FSDPModule)]


@contextmanager
def whole_everywhere(model: nn.Module) -> Iterator[None]:
    """Every process holds every weight whole until the block ends, so one process can run the model alone (rank 0
    writing samples) while the others wait at the closing barrier. Every process must enter it."""
    for unit in units(model):
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        dist.barrier()
        for unit in units(model):
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)


def is_sharded(tensor: Any) -> bool:
    """Whether `tensor` is a DTensor (a sharded one, here)."""
    module = sys.modules.get(DTENSOR_MODULE)
    return module is not None and isinstance(tensor, module.DTensor)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole (every process must call this); any other tensor as it is."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's slice of a sharded tensor; any other tensor as it is."""
    return tensor.to_local() if is_sharded(tensor) else tensor


def gathered(tensors: dict[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
    """The tensors whole, one at a time, on the CPU where `keep` (else an empty dict). Every process calls this
    with the same names in the same order."""
    kept = {}
    for name, tensor in tensors.items():
        full = whole(tensor.detach())
        if keep:
            kept[name] = full.cpu()
    return kept


def gathered_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool) -> dict[str, Any]:
    """The optimizer's state dict as one process would hold it: each parameter's state tensors gathered whole."""
    state_dict = optimizer.state_dict()
    state = {}
    for index, values in state_dict["state"].items():
        tensors = gathered({key: value for key, value in values.items() if isinstance(value, torch.Tensor)}, keep)
        state[index] = {**values, **tensors}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def sharded_optimizer_state(state_dict: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A whole optimizer state dict (from a checkpoint, read by every process) cut into this process's slices, as
    its sharded parameters are: tensors shaped like their parameter become DTensors of its placement."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    state = {}
    for index, values in state_dict["state"].items():
        param = params[index]
        state[index] = {key: _like(value, param) for key, value in values.items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}


def _like(value: Any, param: torch.Tensor) -> Any:
    if not (is_sharded(param) and isinstance(value, torch.Tensor) and value.shape == param.shape):
        return value  # a step count, or a parameter that is not sharded
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every process cuts its own slice from its own copy, nothing is sent
    return distribute_tensor(value.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
