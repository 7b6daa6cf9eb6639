"""Checkpoint files: written atomically, read back (weights with their metadata, optimizer, training state) without
unpickling anything.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
  model.safetensors      the weights (a tied lm_head is stored once) with metadata: config, step, tokenizer hash
                         (studio.run_folder.checkpoint_meta)
  optimizer.safetensors  the optimizer's tensors; its hyperparameters and layout in the file's metadata (JSON)
  rng-rank{R}.safetensors  per process: its random streams (the TrainingState's global torch RNG and data generator)
                         and the batches it holds for later steps (GRPO's answers, when μ > 1)
  trainer_state.json     the TrainingState's counters (step, tokens seen, training seconds) and the world size
It is built in `checkpoints/.tmp-step-N/`, every file fsynced, then renamed into place; only then does
`checkpoints/latest` (itself written to a temp file, fsynced and renamed) name it. A crash at any instant
therefore leaves `latest` naming a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from studio.atomic_write import fsync_path, write_atomically
from studio.checkpoints.training_state import TrainingState
from studio.errors import StudioError
from studio.run_folder.checkpoint_meta import CheckpointMeta
from studio.run_folder.layout import (
    LATEST,
    OPTIMIZER,
    TRAINER_STATE,
    WEIGHTS,
    check_still_there,
    checkpoint_name,
    checkpoints_dir,
    list_checkpoints,
    short_reason,
    temporary_checkpoint_dir,
)


# ---- writing ------------------------------------------------------------------------------------
def begin(run_dir: Path, step: int) -> Path:
    """Rank 0: an empty temporary folder for the checkpoint of `step`."""
    tmp = temporary_checkpoint_dir(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_training_state(tmp: Path, rank: int, state: TrainingState, world_size: int, counters: bool) -> None:
    """Every rank: its random streams and held batches, so dropout, batch order and the answers being learned from
    continue exactly after resume; the process that writes the folder (rank 0 on each machine) also the counters,
    which every rank shares."""
    _save(state.rank_tensors(), _streams_path(tmp, rank))
    if counters:
        write_atomically(tmp / TRAINER_STATE, json.dumps({**state.counters(), "world_size": world_size}, indent=1))


def write_weights(tmp: Path, model_state: dict[str, torch.Tensor], metadata: CheckpointMeta) -> None:
    """Rank 0: the weights, with the metadata."""
    _save(model_state, tmp / WEIGHTS, metadata.header())


def write_optimizer(tmp: Path, optimizer_state: dict[str, Any]) -> None:
    """Rank 0: the optimizer's state dict."""
    optimizer_tensors, optimizer_layout = _flatten_optimizer(optimizer_state)
    _save(optimizer_tensors, tmp / OPTIMIZER, {"layout": json.dumps(optimizer_layout)})


def _streams_path(checkpoint: Path, rank: int) -> Path:
    return checkpoint / f"rng-rank{rank}.safetensors"


def commit(run_dir: Path, tmp: Path, step: int, keep: int) -> Path:
    """Rank 0: move the finished checkpoint into place, point `latest` at it, prune old ones."""
    final = checkpoints_dir(run_dir) / checkpoint_name(step)
    if final.exists():  # the same step saved again (stop right after a periodic save): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)
    write_atomically(checkpoints_dir(run_dir) / LATEST, final.name)
    _prune(run_dir, keep, final.name)
    return final


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    fsync_path(path)


def _prune(run_dir: Path, keep: int, latest: str) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as flat tensors plus a JSON layout (param groups and non-tensor values)."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *layout["scalars"].items()]:
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": layout["param_groups"]}


# ---- reading ------------------------------------------------------------------------------------
def read_weights(checkpoint: Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Weights and metadata of a checkpoint; a damaged file is a StudioError, not a traceback, and one pruned
    while it was read a CheckpointGone."""
    path = checkpoint / WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
        return load_file(str(path)), CheckpointMeta.from_header(header)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:  # RuntimeError: torch maps the file itself
        check_still_there(path)
        raise StudioError(
            f"checkpoint {path} is unreadable or corrupt ({short_reason(error)}); "
            "delete that checkpoint folder to fall back to an earlier one"
        ) from None


def read_optimizer_state(checkpoint: Path) -> dict[str, Any]:
    try:
        with safe_open(str(checkpoint / OPTIMIZER), framework="pt") as file:
            layout = json.loads(file.metadata()["layout"])
        return _unflatten_optimizer(load_file(str(checkpoint / OPTIMIZER)), layout)
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise _damaged(checkpoint, error) from None


def read_training_state(checkpoint: Path, rank: int, state: TrainingState) -> bool:
    """Restore `state` whole from a checkpoint: the counters, and this rank's random streams and held batches. False
    when the checkpoint has no streams for this rank (it was saved by fewer processes): rank 0's data stream, which
    every rank shares, is restored and the caller seeds the torch stream."""
    path = _streams_path(checkpoint, rank)
    try:
        counters = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
        own = path.exists()
        streams = load_file(str(path)) if own else {"data": load_file(str(_streams_path(checkpoint, 0)))["data"]}
        state.restore(counters, streams)
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise _damaged(checkpoint, error) from None
    return own


def _damaged(checkpoint: Path, error: Exception) -> StudioError:
    return StudioError(
        f"training state in {checkpoint} is unreadable or corrupt ({short_reason(error)}); "
        "delete that checkpoint folder to fall back to an earlier one"
    )
