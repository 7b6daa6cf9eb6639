"""What moves as training goes, in one object: the counters and the random streams, saved and loaded whole.

The weights and the optimizer's state are saved beside it (studio.checkpoints.files); this is the rest that
a resume needs to continue exactly: where the run is (step, tokens seen, seconds spent training, examples
drawn) and its random streams (the global torch RNG, which drives dropout, and the data generator, which picks
the windows of plain text).
The counters are the same on every rank, and so is the data generator (every process draws the windows of
all and keeps its share, studio.data.batches); the global torch RNG is each rank's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TrainingState:
    step: int = 0  # optimizer steps done
    tokens_seen: int = 0  # by all processes together
    train_seconds: float = 0.0  # time spent in training steps (not evaluation, samples or checkpoints)
    examples_drawn: int = 0  # example data: this rank's position in its stream of examples (the same on every rank)
    data_generator: torch.Generator = field(default_factory=torch.Generator)  # the batch order, alike on every rank

    def seed(self, seed: int, rank: int = 0) -> None:
        """Fresh streams: the batch order from `seed` (on every rank), dropout from `seed + rank`."""
        torch.manual_seed(seed + rank)
        self.data_generator.manual_seed(seed)

    # ---- to and from a checkpoint ----------------------------------------------------------------
    def counters(self) -> dict[str, int | float]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "examples_drawn": self.examples_drawn,
        }

    def random_streams(self) -> dict[str, torch.Tensor]:
        streams = {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()}
        if torch.cuda.is_available():
            streams["cuda"] = torch.cuda.get_rng_state()
        return streams

    def restore(self, counters: dict[str, int | float], streams: dict[str, torch.Tensor]) -> None:
        """The saved counters and streams (a checkpoint written by fewer processes has only the data stream for
        this rank, which every rank shares: the caller seeds its torch stream)."""
        self.step = int(counters["step"])
        self.tokens_seen = int(counters["tokens_seen"])
        self.train_seconds = float(counters["train_seconds"])
        self.examples_drawn = int(counters.get("examples_drawn", 0))  # absent from checkpoints of plain text runs
        self.data_generator.set_state(streams["data"])
        if "torch" in streams:
            torch.set_rng_state(streams["torch"])
        if "cuda" in streams and torch.cuda.is_available():
            torch.cuda.set_rng_state(streams["cuda"])
