"""Checkpoints: written atomically, read without unpickling anything.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
  model.safetensors      the weights (a tied lm_head is stored once) with metadata: config, step, tokenizer hash
  optimizer.safetensors  the optimizer's tensors; its hyperparameters and layout in the file's metadata (JSON)
  rng-rank{R}.safetensors  per process: the global torch RNG (dropout) and the data sampler's generator
  trainer_state.json     step, tokens seen, elapsed time, world size
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

from studio.errors import StudioError
from studio.runs import checkpoint_name, checkpoints_dir

FORMAT = "llm-studio/1"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


# ---- writing ------------------------------------------------------------------------------------
def temporary_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` is built before it is renamed into place."""
    return checkpoints_dir(run_dir) / f".tmp-{checkpoint_name(step)}"


def begin(run_dir: Path, step: int) -> Path:
    """Rank 0: an empty temporary folder for the checkpoint of `step`."""
    tmp = temporary_dir(run_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(tmp: Path, rank: int, data_generator: torch.Generator) -> None:
    """Every rank: its own random streams, so dropout and batch order continue exactly after resume."""
    tensors = {"torch": torch.get_rng_state(), "data": data_generator.get_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    _save(tensors, tmp / f"rng-rank{rank}.safetensors")


def write_main(tmp: Path, model_state: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               metadata: dict[str, str], trainer_state: dict[str, Any]) -> None:
    """Rank 0: weights, optimizer state and trainer state."""
    _save(model_state, tmp / WEIGHTS, {"format": FORMAT, **metadata})
    optimizer_tensors, optimizer_layout = _flatten_optimizer(optimizer.state_dict())
    _save(optimizer_tensors, tmp / OPTIMIZER, {"layout": json.dumps(optimizer_layout)})
    _write_text(tmp / TRAINER_STATE, json.dumps(trainer_state, indent=1))


def commit(run_dir: Path, tmp: Path, step: int, keep: int) -> Path:
    """Rank 0: move the finished checkpoint into place, point `latest` at it, prune old ones."""
    final = checkpoints_dir(run_dir) / checkpoint_name(step)
    if final.exists():  # the same step saved again (stop right after a periodic save): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    _write_text(checkpoints_dir(run_dir) / "latest", final.name)
    _prune(run_dir, keep, final.name)
    return final


TIED_HEAD = "lm_head.weight"  # with tied embeddings the output head is the embedding matrix, stored once


def weights_to_save(model: torch.nn.Module, tied: bool) -> dict[str, torch.Tensor]:
    weights = model.state_dict()
    if tied:
        weights.pop(TIED_HEAD, None)
    return weights


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    _fsync_file(path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)  # on POSIX a directory is fsynced through a read-only descriptor too


def _prune(run_dir: Path, keep: int, latest: str) -> None:
    complete = sorted(p for p in checkpoints_dir(run_dir).glob("step-*") if p.is_dir())
    for old in complete[:-keep]:
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
def read_weights(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights and metadata of a checkpoint; a damaged file is a StudioError, not a traceback."""
    path = checkpoint / WEIGHTS
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as error:
        raise StudioError(f"checkpoint {path} is unreadable or corrupt ({_short(error)}); "
                          "delete that checkpoint folder to fall back to an earlier one") from None


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], tied: bool) -> None:
    """Load weights in place (a tied head follows its embedding, being the same tensor); mismatches are errors."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes differ
        raise StudioError(f"the checkpoint does not fit this model ({_short(error)}); "
                          "use the config the checkpoint was trained with") from None
    missing = [key for key in missing if not (tied and key == TIED_HEAD)]
    if missing or unexpected:
        raise StudioError(f"the checkpoint does not fit this model (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); use the config it was trained with")


def read_training_state(checkpoint: Path, rank: int) -> dict[str, Any]:
    """Optimizer state, this rank's RNG streams (None if it was saved with fewer ranks) and trainer state."""
    try:
        with safe_open(str(checkpoint / OPTIMIZER), framework="pt") as file:
            layout = json.loads(file.metadata()["layout"])
        optimizer = _unflatten_optimizer(load_file(str(checkpoint / OPTIMIZER)), layout)
        rng_path = checkpoint / f"rng-rank{rank}.safetensors"
        rng = load_file(str(rng_path)) if rng_path.exists() else None
        trainer_state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise StudioError(f"training state in {checkpoint} is unreadable or corrupt ({_short(error)}); "
                          "delete that checkpoint folder to fall back to an earlier one") from None
    return {"optimizer": optimizer, "rng": rng, "trainer": trainer_state}


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__
