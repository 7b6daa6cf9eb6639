"""Sweeps: the cross product of a few config values, queued as runs with readable names, and their results.

`llm-studio sweep lr-depth --grid train.lr=1e-3,3e-3 --grid model.n_layer=2,4` queues four runs named
`lr-depth-lr1e-3-n_layer2`, ... Every run is checked before any is created, so a bad key or value is one line
and nothing is queued. The sweep is remembered in `$LLM_STUDIO_HOME/sweeps/<name>.json` (its keys, and each run
with the values it was given); results are read from the runs' folders, as everything else is.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio.atomic_write import write_atomically
from studio.config import RunConfig, field_spec, set_field, split_list, validate
from studio.errors import StudioError
from studio.paths import check_name, sweeps_dir
from studio.queue.entries import add_entry, ensure_runner, mark_queued
from studio.run_folder.layout import check_new_name, run_path
from studio.run_folder.status import RunInfo, summarize
from studio.runs.control import delete_run

UNSAFE_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Axis:
    key: str  # section.key
    texts: list[str]  # the values as given on the command line


@dataclass
class SweepRun:
    name: str
    values: dict[str, str]  # key -> the value's text


@dataclass
class Sweep:
    name: str
    keys: list[str]
    runs: list[SweepRun]


# ---- planning: every run checked before any is created ------------------------------------------------------
def parse_axis(option: str) -> Axis:
    """`section.key=v1,v2,...` from `--grid` (`\\,` a comma within a value, as `\\|` is a | within a list's item);
    the key must be a config field."""
    key, sep, values = option.partition("=")
    texts = [text.strip() for text in split_list(values, ",")]
    if not sep or not all(texts):
        raise StudioError(f"--grid {option!r}: write it as section.key=v1,v2, e.g. --grid train.lr=1e-3,3e-3")
    field_spec(key.strip(), where="--grid")
    return Axis(key.strip(), texts)


def plan_sweep(name: str, base: RunConfig, options: list[str]) -> list[tuple[SweepRun, RunConfig]]:
    """Each run of the sweep with its config, validated and named; nothing is written."""
    check_name(name, "sweep")
    if sweep_file(name).exists():
        raise StudioError(f"sweep {name!r} already exists (`llm-studio runs --sweep {name}`); pick another name")
    axes = [parse_axis(option) for option in options]
    keys = [axis.key for axis in axes]
    if len(set(keys)) < len(keys):
        raise StudioError("--grid: each key once; give all its values in one --grid, separated by commas")
    labels = name_labels(keys)
    planned = []
    for texts in itertools.product(*(axis.texts for axis in axes)):
        run = SweepRun(
            f"{name}-" + "-".join(label + UNSAFE_IN_NAMES.sub("_", text) for label, text in zip(labels, texts)),
            dict(zip(keys, texts)),
        )
        planned.append((run, sweep_config(base, run)))
    names = [run.name for run, _ in planned]
    if len(set(names)) < len(names):
        raise StudioError("--grid: two values of a key give the same run name; give each value once")
    for run_name in names:
        check_name(run_name, "run")  # a long sweep name with many keys can pass the 100 characters
        check_new_name(run_name)
    return planned


def name_labels(keys: list[str]) -> list[str]:
    """What names a key in run names: the part after the section (`lr`), or the whole key where that is
    ambiguous (`model.vocab_size` beside `data.vocab_size`)."""
    short = [key.partition(".")[2] for key in keys]
    return [label if short.count(label) == 1 else key for label, key in zip(short, keys)]


def sweep_config(base: RunConfig, run: SweepRun) -> RunConfig:
    config = base.copy()
    for key, text in run.values.items():
        set_field(config, key, text, where="--grid")
    try:
        validate(config)
    except StudioError as error:
        raise StudioError(f"sweep run {run.name}: {error}") from None
    return config


# ---- creating: runs prepared, the sweep remembered, the runs queued ----------------------------------------
def create_sweep(
    name: str, base: RunConfig, options: list[str], progress: Callable[[str, int, int], None] | None = None
) -> Sweep:
    """Plan the sweep, create its runs (dataset prepared as `train` does), remember it, queue every run in order.
    When a run cannot be created, the runs created before it are removed: a sweep is queued whole or not at all."""
    from studio.runs.prepare import prepare_run

    planned = plan_sweep(name, base, options)
    created = []
    try:
        for run, config in planned:
            created.append(prepare_run(config, run.name, progress))
    except BaseException:
        for run_dir in created:
            delete_run(run_dir)
        raise
    sweep = Sweep(name, list(planned[0][0].values), [run for run, _ in planned])
    write_sweep(sweep)
    for run in sweep.runs:
        add_entry(run.name)
    ensure_runner()
    return sweep


# ---- the sweep file --------------------------------------------------------------------------------------------
def sweep_file(name: str) -> Path:
    return sweeps_dir() / f"{check_name(name, 'sweep')}.json"


def write_sweep(sweep: Sweep) -> None:
    sweeps_dir().mkdir(parents=True, exist_ok=True)
    content = {
        "name": sweep.name,
        "keys": sweep.keys,
        "runs": [{"run": run.name, "values": run.values} for run in sweep.runs],
        "created": round(time.time(), 3),
    }
    write_atomically(sweep_file(sweep.name), json.dumps(content, indent=1) + "\n")


def read_sweep(name: str) -> Sweep:
    path = sweep_file(name)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        runs = [SweepRun(str(run["run"]), {str(k): str(v) for k, v in run["values"].items()}) for run in raw["runs"]]
        return Sweep(str(raw["name"]), [str(key) for key in raw["keys"]], runs)
    except FileNotFoundError:
        known = ", ".join(sweep_names()) or "none yet"
        raise StudioError(f"no sweep named {name!r} (sweeps: {known})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise StudioError(f"sweep file {path} is damaged ({error}); remove it, its runs stay") from None


def sweep_names() -> list[str]:
    return sorted(path.stem for path in sweeps_dir().glob("*.json"))


def sweep_of(run: str) -> Sweep | None:
    """The sweep that queued the run, if any (a damaged sweep file counts as none)."""
    for name in sweep_names():
        try:
            sweep = read_sweep(name)
        except StudioError:
            continue
        if any(member.name == run for member in sweep.runs):
            return sweep
    return None


# ---- results ----------------------------------------------------------------------------------------------------
def sweep_results(sweep: Sweep) -> list[tuple[SweepRun, RunInfo]]:
    """The sweep's runs that still exist, best final validation loss first; runs without one yet last."""
    members = [run for run in sweep.runs if run_path(run.name).is_dir()]
    infos = mark_queued([summarize(run_path(run.name)) for run in members])
    results = list(zip(members, infos))
    return sorted(results, key=lambda pair: (pair[1].val_loss is None, pair[1].val_loss or 0.0))
