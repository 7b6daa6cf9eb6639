"""`llm-studio leaderboard --ratings`: the playground's judged pairs (studio.playground_preferences) as a rating per
checkpoint, by the Bradley-Terry model: checkpoint i beats j with probability s_i / (s_i + s_j).

The log-strengths are the maximum-likelihood fit with a small Gaussian prior (PRIOR: a player who always wins
would otherwise go to infinity), found by Newton's method (the penalised log-likelihood is strictly concave; each
step halved until it gains). Ratings are on Elo's scale (400 · log10 of the strength, the players' mean at 1000:
a 3-to-1 favourite stands 191 points higher), each with a 95% interval from refitting on pairs drawn again with
replacement (a fixed seed: the same file gives the same intervals). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.atomic_write import appended_records
from studio.formatting import counted
from studio.playground_preferences import preferences_file

PRIOR = 0.01  # the penalty's weight on each log-strength squared: a standard deviation of 10 in log-strength
ELO_SCALE = 400 / math.log(10)  # Elo points per unit of log-strength
ELO_MEAN = 1000
BOOTSTRAP_SAMPLES = 500
BOOTSTRAP_SEED = 0
NEWTON_STEPS = 100
TOLERANCE = 1e-10  # the largest change of a log-strength at which the fit has converged


NO_PREFERENCES = (
    "no preferences between checkpoints yet; in the playground (tab 5) answer one prompt with two checkpoints and "
    "press a or b for the better answer"
)
COLUMNS = ("CHECKPOINT", "RATING", "95% INTERVAL", "WON-LOST")


@dataclass(frozen=True)
class Rating:
    player: str  # a checkpoint: "RUN@STEP" (or "RUN@latest")
    rating: float
    low: float  # the 95% interval's ends
    high: float
    wins: int
    losses: int

    @property
    def run(self) -> str:
        return self.player.rsplit("@", 1)[0]


def rating_cells(rating: Rating) -> tuple[str, ...]:
    """A rating's row under COLUMNS, as `leaderboard --ratings` prints it and the studio's leaderboard shows it."""
    interval = f"{rating.low:.0f} to {rating.high:.0f}"
    return rating.player, f"{rating.rating:.0f}", interval, f"{rating.wins}-{rating.losses}"


def ratings_note(pairs: int) -> str:
    return f"Bradley-Terry over {counted(pairs, 'judged pair')}, Elo scale (mean {ELO_MEAN})"


def preference_pairs(path: Path | None = None) -> list[tuple[str, str]]:
    """(winner, loser) of each row of the playground's preference file that names both checkpoints; rows of other
    tools (no `chosen_model`), lines a crash cut short and a checkpoint judged against itself are passed over."""
    pairs = []
    for row in appended_records(path or preferences_file()):
        try:
            pair = _player(row["chosen_model"]), _player(row["rejected_model"])
        except (TypeError, KeyError):
            continue
        if pair[0] != pair[1]:
            pairs.append(pair)
    return pairs


def _player(model: dict) -> str:
    return f"{model['run']}@{model['checkpoint']}"


def ratings(pairs: list[tuple[str, str]], samples: int = BOOTSTRAP_SAMPLES) -> list[Rating]:
    """Each player's rating with its bootstrap interval and record, best first."""
    players = sorted({player for pair in pairs for player in pair})
    index = {player: i for i, player in enumerate(players)}
    winners = np.array([index[winner] for winner, _ in pairs])
    losers = np.array([index[loser] for _, loser in pairs])
    fitted = elo(fit_strengths(_wins(winners, losers, len(players))))
    generator = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = []
    for _ in range(samples):
        chosen = generator.integers(0, len(pairs), len(pairs))
        drawn.append(elo(fit_strengths(_wins(winners[chosen], losers[chosen], len(players)))))
    low, high = np.percentile(np.array(drawn), [2.5, 97.5], axis=0)
    wins, losses = np.bincount(winners, minlength=len(players)), np.bincount(losers, minlength=len(players))
    found = [
        Rating(player, float(fitted[i]), float(low[i]), float(high[i]), int(wins[i]), int(losses[i]))
        for i, player in enumerate(players)
    ]
    return sorted(found, key=lambda rating: -rating.rating)


def _wins(winners: np.ndarray, losers: np.ndarray, players: int) -> np.ndarray:
    """wins[i, j]: how often player i beat player j."""
    wins = np.zeros((players, players))
    np.add.at(wins, (winners, losers), 1)
    return wins


def fit_strengths(wins: np.ndarray) -> np.ndarray:
    """The log-strengths that maximise the penalised Bradley-Terry log-likelihood of `wins` (Newton's method)."""
    games = wins + wins.T
    strengths = np.zeros(len(wins))
    for _ in range(NEWTON_STEPS):
        beats = _sigmoid(strengths[:, None] - strengths[None, :])  # P(i beats j)
        gradient = wins.sum(axis=1) - (games * beats).sum(axis=1) - PRIOR * strengths
        weights = games * beats * (1 - beats)
        hessian = weights - np.diag(weights.sum(axis=1)) - PRIOR * np.eye(len(wins))
        step = np.linalg.solve(hessian, -gradient)
        while _log_likelihood(wins, strengths + step) < _log_likelihood(wins, strengths) and abs(step).max() > 1e-12:
            step /= 2  # a full step overshot
        strengths = strengths + step
        if abs(step).max() < TOLERANCE:
            break
    return strengths


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(x / 2))  # no overflow for large |x|


def _log_likelihood(wins: np.ndarray, strengths: np.ndarray) -> float:
    """The penalised log-likelihood: sum of wins[i, j] · log P(i beats j), less the prior's penalty."""
    margins = strengths[:, None] - strengths[None, :]
    return float(-(wins * np.logaddexp(0, -margins)).sum() - PRIOR / 2 * strengths @ strengths)


def elo(strengths: np.ndarray) -> np.ndarray:
    """Log-strengths on Elo's scale, their mean at ELO_MEAN."""
    return ELO_MEAN + ELO_SCALE * (strengths - strengths.mean())
