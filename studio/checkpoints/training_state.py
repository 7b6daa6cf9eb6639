"""What moves as training goes, in one object: the counters and the random streams, saved and loaded whole.

The weights and the optimizer's state are saved beside it (studio.checkpoints.files); this is the rest that
a resume needs to continue exactly: where the run is (step, tokens seen, seconds spent training, examples
drawn), its random streams (the global torch RNG, which drives dropout and a private run's noise, and the data
generator, which picks the windows of plain text), and a private run's accountant history (studio.train.privacy).
The counters are the same on every rank, and so is the data generator (every process draws the windows of
all and keeps its share, studio.data.batches); the global torch RNG is each rank's own, and so are the batches an
objective holds for later steps (GRPO's sampled answers, learned from by several updates in a row).
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
    held: list[dict[str, torch.Tensor]] = field(default_factory=list)  # batches kept for later steps, in order
    # DP-SGD's accountant history: (noise multiplier, sampling rate, steps) runs, as Opacus's RDPAccountant keeps it
    privacy_history: list[tuple[float, float, int]] = field(default_factory=list)

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
            "privacy_history": [list(entry) for entry in self.privacy_history],
        }

    def rank_tensors(self) -> dict[str, torch.Tensor]:
        """This rank's own: its random streams, and the batches it holds (`held.INDEX.NAME`)."""
        tensors = {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()}
        if torch.cuda.is_available():
            tensors["cuda"] = torch.cuda.get_rng_state()
        for index, batch in enumerate(self.held):
            tensors.update({f"held.{index}.{name}": tensor for name, tensor in batch.items()})
        return tensors

    def restore(self, counters: dict[str, int | float], tensors: dict[str, torch.Tensor]) -> None:
        """The saved counters and this rank's tensors (a checkpoint written by fewer processes has only the data
        stream for this rank, which every rank shares: the caller seeds its torch stream, and nothing is held)."""
        self.step = int(counters["step"])
        self.tokens_seen = int(counters["tokens_seen"])
        self.train_seconds = float(counters["train_seconds"])
        self.examples_drawn = int(counters.get("examples_drawn", 0))  # absent from checkpoints of plain text runs
        self.privacy_history = [(float(n), float(q), int(s)) for n, q, s in counters.get("privacy_history", [])]
        self.data_generator.set_state(tensors["data"])
        if "torch" in tensors:
            torch.set_rng_state(tensors["torch"])
        if "cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["cuda"])
        held: dict[int, dict[str, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            if key.startswith("held."):
                _, index, name = key.split(".", 2)
                held.setdefault(int(index), {})[name] = tensor
        self.held = [held[index] for index in sorted(held)]
