"""Training batches: random windows of a token file, read through np.memmap like nanoGPT.

Which windows are drawn depends only on the torch.Generator passed in, so a run that saves the
generator's state and restores it on resume draws exactly the batches it would have drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError


class TokenFile:
    """The token ids of one split (`train.bin` or `val.bin`), mapped from disk, not loaded."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.path = Path(path)
        # np.memmap refuses empty files; an empty split is reported by sample_batch instead
        empty = self.path.stat().st_size == 0
        self.ids = np.zeros(0, dtype=dtype) if empty else np.memmap(self.path, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return len(self.ids)


def sample_batch(
    tokens: TokenFile, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows: inputs x and targets y (x shifted by one token), int64, shape (B, T)."""
    if len(tokens) < block_size + 1:
        raise StudioError(
            f"the {tokens.path.stem} split has {len(tokens)} tokens, fewer than "
            f"model.block_size + 1 = {block_size + 1}; lower model.block_size or use more data"
        )
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).numpy()
    windows = tokens.ids[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))
    return x, y
