"""GRPO's reward functions, by name (torch-free: the CLI checks them before a run starts).

A reward is called with (prompt, completion, row) and returns a float; `row` is the prompts file's row (its extra
fields: a reference answer, say). Built-ins:

- `exact:FIELD`: 1 when the completion's final answer equals the row's FIELD: the last number of each when the
  field holds one, else the stripped texts; 0 otherwise;
- `regex:PATTERN`: 1 when the stripped completion matches PATTERN whole (`re.fullmatch`), else 0;
- `length:N`: 1 − |characters − N| / N, at least 0 (1 at exactly N characters);
- `path/to/file.py:function`: the user's own function from that file (their code, run as such).

A name may carry a weight, `2*regex:^\\d+$`; a run's reward is the weighted sum of its rewards.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.errors import StudioError

RewardFunction = Callable[[str, str, dict[str, Any]], float]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
BUILT_INS = "exact:FIELD, regex:PATTERN, length:N, or path/to/file.py:function"


@dataclass(frozen=True)
class Reward:
    name: str  # as given, without its weight: the key of its metrics
    weight: float
    function: RewardFunction | None  # None when only checked (the user's file is run only by the trainer)


def final_answer(text: str) -> str:
    """The last number in the text, or the stripped text when it holds none."""
    numbers = NUMBER.findall(text)
    return numbers[-1] if numbers else text.strip()


def exact_match(field: str) -> RewardFunction:
    def reward(prompt: str, completion: str, row: dict[str, Any]) -> float:
        if field not in row:
            raise StudioError(f"reward exact:{field}: the row has no field {field!r}; add it to every prompt row")
        return float(final_answer(completion) == final_answer(str(row[field])))

    return reward


def regex_match(pattern: str) -> RewardFunction:
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise StudioError(f"reward regex:{pattern}: not a regular expression ({error}); fix the pattern") from None
    return lambda prompt, completion, row: float(compiled.fullmatch(completion.strip()) is not None)


def length_target(target: str) -> RewardFunction:
    if not target.isdigit() or int(target) == 0:
        raise StudioError(f"reward length:{target}: the target is a positive number of characters, e.g. length:200")
    characters = int(target)
    return lambda prompt, completion, row: max(0.0, 1 - abs(len(completion) - characters) / characters)


def user_file(path: str, name: str) -> Path:
    """The user's reward file, which must exist."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise StudioError(f"reward {path}:{name}: no file {file}; give path/to/file.py:function")
    return file


def user_function(path: str, name: str) -> RewardFunction:
    """The user's function `name` from their file at `path`, loaded with importlib (their code, run as such)."""
    file = user_file(path, name)
    spec = importlib.util.spec_from_file_location(f"studio_user_reward_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise StudioError(f"reward {path}:{name}: {file} defines no function {name}; name one it defines")
    return function


BUILDERS: dict[str, Callable[[str], RewardFunction]] = {
    "exact": exact_match,
    "regex": regex_match,
    "length": length_target,
}


def parse_reward(text: str, run_user_code: bool = True) -> Reward:
    """One reward from its name, `[WEIGHT*]KIND:ARGUMENT`; an unknown one refused in one line. Without
    `run_user_code` (checking a config) a user's function is only looked for: its file must exist."""
    weight, name = 1.0, text.strip()
    if "*" in name.split(":", 1)[0]:
        weight_text, name = name.split("*", 1)
        try:
            weight = float(weight_text)
        except ValueError:
            raise StudioError(f"reward {text!r}: {weight_text!r} is not a weight; write e.g. 0.5*length:100") from None
    kind, _, argument = name.partition(":")
    if kind in BUILDERS and argument:
        return Reward(name, weight, BUILDERS[kind](argument))
    path, _, function = name.rpartition(":")
    if path.endswith(".py") and function:
        if not run_user_code:
            user_file(path, function)
            return Reward(name, weight, None)
        return Reward(name, weight, user_function(path, function))
    raise StudioError(f"unknown reward {name!r}: give {BUILT_INS}")


def parse_rewards(names: list[str], run_user_code: bool = True) -> list[Reward]:
    """The run's rewards (train.rewards); at least one."""
    if not names:
        raise StudioError(f"train.objective grpo needs rewards: --rewards {BUILT_INS} (several: comma-separated)")
    return [parse_reward(name, run_user_code) for name in names]


def score(rewards: list[Reward], prompt: str, completion: str, row: dict[str, Any]) -> list[float]:
    """Each reward's value of one completion (unweighted); a user function's failure stops the run in one line."""
    values = []
    for reward in rewards:
        try:
            values.append(float(reward.function(prompt, completion, row)))
        except StudioError:
            raise
        except Exception as error:  # the user's code: its failure named, not a traceback
            raise StudioError(f"reward {reward.name} failed: {type(error).__name__}: {error}") from None
    return values
