"""The run folder's files, by name, and what can be read from them without torch.

    $LLM_STUDIO_HOME/runs/<name>/
        config.toml                     the resolved config (the launcher writes it once; resume may raise max_steps)
        events.jsonl                    the event stream (studio.run_folder.events)
        trainer.log                     stdout and stderr of every rank
        pid                             "<pid> <start time>" of the launched process group
        lock                            held (flock) by the run's processes while it trains: one trainer per run
        STOP, CHECKPOINT                requests the trainer polls for every step, then removes
        checkpoints/latest              the name of the newest complete checkpoint
        checkpoints/step-NNNNNNN/       one checkpoint (studio.checkpoints.files writes and reads its files)
        checkpoints/.tmp-step-NNNNNNN/  a checkpoint being written
        trackers/                       what experiment trackers write here (TensorBoard's event files), if asked
        reference_logps.safetensors     a precomputed reference's log-probabilities of every answer (DPO, IPO):
                                        computed at the run's first start, read again when it resumes

Every reader and writer (the CLI, the trainer, generation, export, the studio) takes these names from here.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from studio.config import RunConfig
from studio.errors import StudioError
from studio.objectives import objective_of
from studio.paths import TEMPORARY_PREFIX, check_name, runs_dir
from studio.run_folder.checkpoint_meta import CheckpointMeta

CONFIG = "config.toml"
EVENTS = "events.jsonl"
EVENTS_SUMMARY = "events.summary.json"  # what events.jsonl adds up to, so far (studio.run_folder.history)
TRAINER_LOG = "trainer.log"
EVALUATIONS = "evaluations.jsonl"  # task results `evaluate` recorded, for the leaderboard (studio.tasks.evaluations)
EXPORTS = "exports.jsonl"  # Hugging Face folders `export` wrote from the run, for the playground (run_folder.exports)
PID = "pid"
LOCK = "lock"
STOP = "STOP"
CHECKPOINT_REQUEST = "CHECKPOINT"
CHECKPOINTS = "checkpoints"
TRACKER_LOGS = "trackers"
REFERENCE_LOGPS = "reference_logps.safetensors"
LATEST = "latest"
WEIGHTS = "model.safetensors"  # in a checkpoint folder; its metadata (CheckpointMeta) holds the config trained with
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"step-([0-9]{7,})")  # what checkpoint_name writes; any other name is not a checkpoint
LOOK_AGAIN = 10  # how often a reader looks again when the trainer replaced the newest checkpoint while it read


# ---- runs ---------------------------------------------------------------------------------------
def run_path(name: str) -> Path:
    """The folder of the run `name` (which must be a valid name, so the folder is inside the home)."""
    return runs_dir() / check_name(name, "run")


def is_run(folder: Path) -> bool:
    return (folder / CONFIG).is_file()


def list_run_dirs() -> list[Path]:
    root = runs_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG).exists())


def existing_run(name: str) -> Path:
    path = run_path(name)
    if not (path / CONFIG).exists():
        known = ", ".join(sorted(p.name for p in list_run_dirs())[:8]) or "none yet"
        raise StudioError(f"no run named {name!r} (runs: {known}); see `llm-studio runs`")
    return path


def run_or_folder(target: str) -> Path:
    """A run given by its name or by its folder's path."""
    folder = Path(target).expanduser()
    return folder if is_run(folder) else existing_run(target)


def check_new_name(name: str) -> None:
    if run_path(name).exists():
        raise StudioError(
            f"run {name!r} already exists; pick another --name, or continue it with `llm-studio resume {name}`"
        )


def default_run_name(config: RunConfig) -> str:
    stem = f"{config.preset}-{time.strftime('%m%d-%H%M%S')}"
    name, suffix = stem, 2
    while run_path(name).exists():
        name, suffix = f"{stem}-{suffix}", suffix + 1
    return name


def read_config(run_dir: Path) -> RunConfig:
    return RunConfig.load(run_dir / CONFIG)


def trained_config(run_dir: Path, metadata: CheckpointMeta) -> RunConfig:
    """The config a checkpoint was trained with: its weights' metadata, else (an older checkpoint) config.toml."""
    return metadata.config or read_config(run_dir)


# ---- checkpoints (the layout; studio.checkpoints.files writes and reads their files) -------------------
def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder (one that `is_checkpoint_name` accepts)."""
    return int(checkpoint.name.removeprefix("step-"))


def is_checkpoint_name(name: str) -> bool:
    """Exactly the names checkpoint_name gives (step-NNNNNNN): a user's `step-0000010 backup` is not a checkpoint."""
    found = CHECKPOINT_NAME.fullmatch(name)
    return found is not None and checkpoint_name(int(found.group(1))) == name


class CheckpointGone(StudioError):
    """A checkpoint removed while it was being read: a training run keeps only its newest few."""


def check_still_there(file: Path) -> None:
    """After a checkpoint's file failed to read: CheckpointGone when the file is no longer there (its checkpoint
    was pruned meanwhile), so that only a file that is there is ever called damaged."""
    if not file.is_file():
        raise CheckpointGone(
            f"checkpoint {file.parent.name} of run {run_of_checkpoint(file.parent).name} was removed while it was "
            "read (a run keeps only its newest checkpoints); ask again for the newest, or pick a saved step"
        )


def checkpoints_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def run_of_checkpoint(checkpoint: Path) -> Path:
    """The run folder a checkpoint folder belongs to: runs/<run>/checkpoints/step-NNNNNNN."""
    return checkpoint.parent.parent


def temporary_checkpoint_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` is built before it is renamed into place."""
    return checkpoints_dir(run_dir) / f"{TEMPORARY_PREFIX}{checkpoint_name(step)}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None when the run has none yet."""
    try:
        name = (checkpoints_dir(run_dir) / LATEST).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not is_checkpoint_name(name):  # empty or damaged: as if absent, the newest saved one is found by its name
        return None
    path = checkpoints_dir(run_dir) / name
    return path if path.is_dir() else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, oldest first."""
    found = [p for p in checkpoints_dir(run_dir).glob("step-*") if is_checkpoint_name(p.name) and p.is_dir()]
    return sorted(found, key=checkpoint_step)


def list_checkpoint_steps(run_dir: Path) -> list[int]:
    return [checkpoint_step(p) for p in list_checkpoints(run_dir)]


def find_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """The checkpoint of `step`, or the latest; a StudioError naming what exists when there is none."""
    if step is None:
        found = latest_checkpoint(run_dir)
    else:
        found = checkpoints_dir(run_dir) / checkpoint_name(step)
        found = found if found.is_dir() else None
    if found is None:
        raise StudioError(
            f"run {run_dir.name} has no checkpoint{'' if step is None else f' at step {step}'} "
            f"(saved steps: {_saved(run_dir)}); train longer or pick a saved step"
        )
    return found


def checkpoint_problem(run_dir: Path, checkpoint: Path, for_resume: bool = False) -> str | None:
    """Why a checkpoint cannot be used, from its files' headers alone (torch-free), or None when it can: a file
    that is damaged or missing, a state or metadata of another step than the folder's, or weights that do not
    add up to the model its config names (so a copied folder cannot make a loader build a model it lacks)."""
    from safetensors import safe_open

    from studio.sizing.sizes import param_count

    needed = [WEIGHTS, OPTIMIZER, TRAINER_STATE] if for_resume else [WEIGHTS]
    missing = [name for name in needed if not (checkpoint / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    values, header = 0, {}
    for path in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy") as file:
                if path.name == WEIGHTS:
                    header = file.metadata() or {}
                    values = sum(math.prod(file.get_slice(name).get_shape()) for name in file.keys())
        except Exception as error:  # safetensors raises several types for a damaged file
            if not path.is_file():
                return f"{path.name} missing"
            return f"{path.name} is unreadable or corrupt ({short_reason(error)})"
    try:
        metadata = CheckpointMeta.from_header(header)
    except (StudioError, ValueError, TypeError) as error:
        return f"the metadata of its weights is unreadable ({short_reason(error)})"
    step = checkpoint_step(checkpoint)
    if metadata.step not in (None, step):
        return f"its weights say step {metadata.step}, its folder step {step}"
    if (checkpoint / TRAINER_STATE).is_file():
        try:
            state_step = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["step"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"{TRAINER_STATE} is unreadable ({short_reason(error)})"
        if state_step != step:
            return f"its {TRAINER_STATE} says step {state_step!r}, its folder step {step}"
    try:
        config = trained_config(run_dir, metadata)
    except (StudioError, ValueError, TypeError) as error:
        return f"the config it was trained with is unreadable ({short_reason(error)})"
    if not counted(config):
        return None  # the model is built from its base folder or its labels; loading checks every shape
    expected = param_count(config.model, config.model.vocab_size)
    if values != expected:
        return f"its weights hold {values:,} values where the model of its config has {expected:,}"
    return None


def counted(config: RunConfig) -> bool:
    """A studio language model trained fully: its checkpoint holds exactly the values `param_count` says (others
    are built from a base folder, or with a classifier's head, and their loads check every name and shape)."""
    return not config.model.pretrained and config.train.method == "full" and not objective_of(config).new_head


def usable_checkpoint(run_dir: Path, step: int | None = None, for_resume: bool = False) -> tuple[Path, str | None]:
    """The checkpoint of `step`, refused with the reason when it cannot be used; else the newest usable one,
    from `latest` down. The note (None when the latest was usable) says in one line which was passed over, why."""
    if step is not None:
        found = find_checkpoint(run_dir, step)
        problem = checkpoint_problem(run_dir, found, for_resume)
        if problem:
            raise StudioError(
                f"checkpoint {found.name} of run {run_dir.name} cannot be used: {problem}; "
                f"pick another with --checkpoint (saved steps: {_saved(run_dir)})"
            )
        return found, None
    for _ in range(LOOK_AGAIN):
        latest = latest_checkpoint(run_dir)
        found, passed_over = _newest_usable(run_dir, latest, for_resume)
        if not passed_over or latest_checkpoint(run_dir) == latest:
            break
        # the run saved a newer checkpoint while these were checked (and may have pruned them): look again
    if found is not None:
        note = f"checkpoint {passed_over[0]} cannot be used; using {found.name}" if passed_over else None
        return found, note
    if not passed_over:
        find_checkpoint(run_dir)  # raises the error that names what exists
    raise StudioError(f"run {run_dir.name} has no usable checkpoint: {'; '.join(passed_over[:3])}")


def _newest_usable(run_dir: Path, latest: Path | None, for_resume: bool) -> tuple[Path | None, list[str]]:
    """The newest usable checkpoint up to `latest` (None: none is), and those passed over on the way, with why."""
    newest = checkpoint_step(latest) if latest else None
    passed_over = []
    for candidate in reversed(list_checkpoints(run_dir)):
        if newest is not None and checkpoint_step(candidate) > newest:
            continue  # never completed, or of an attempt that a resume superseded
        problem = checkpoint_problem(run_dir, candidate, for_resume)
        if problem is None:
            return candidate, passed_over
        passed_over.append(f"{candidate.name} ({problem})")
    return None, passed_over


def short_reason(error: Exception) -> str:
    """The first line of an error's message, short enough for a one-line report."""
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


def _saved(run_dir: Path) -> str:
    return ", ".join(str(s) for s in list_checkpoint_steps(run_dir)) or "none"


def checkpoint_metadata(checkpoint: Path) -> CheckpointMeta:
    """The metadata of a checkpoint's weights (config, step, tokenizer hash, method), read from the header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint / WEIGHTS), framework="numpy") as file:
            header = file.metadata() or {}
    except Exception as error:  # safetensors raises several types for a damaged file
        check_still_there(checkpoint / WEIGHTS)
        raise StudioError(f"{checkpoint / WEIGHTS} is unreadable or corrupt ({short_reason(error)})") from None
    return CheckpointMeta.from_header(header)
