"""Training batches from a prepared dataset's files, read through np.memmap like nanoGPT.

Two kinds of data, one `Batch`:
- plain text (`WindowStream`): random windows of the concatenated documents, every target learned. Which
  windows are drawn depends only on the torch.Generator passed in, so a run that saves the generator's state
  and restores it on resume draws exactly the batches it would have drawn. Every process draws the windows of
  all processes from a generator seeded alike and keeps its share: a step trains on the same windows whatever
  the number of processes (N processes of batch B train as one process of batch N·B).
- examples (`ExampleStream`, chat and instruction data): one example per row, right-padded (causal attention
  never looks right, so padding needs no mask), or several packed into each row with positions restarting at
  every example, which keeps attention and loss inside it. Targets the supervision mask leaves out are IGNORE.
  Examples come in epochs, each a seeded permutation, shared out between processes; the position in that
  stream is one counter (`examples_drawn`), so a resume continues exactly where the run was.
- differentially private training (`PoissonStream`): each step takes every unit (an example, or one of the
  disjoint windows plain text is cut into) with the same probability, drawn from the data generator, as DP-SGD's
  privacy accounting assumes (studio.train.privacy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from studio.errors import StudioError

IGNORE = -1  # the target of a position that is not learned (the loss's ignore_index)


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) input ids
    y: torch.Tensor  # (B, T) target ids, IGNORE where nothing is learned
    tokens: int  # real tokens read (padding left out)
    positions: torch.Tensor | None = None  # (B, T) for packed rows: each example's positions from 0
    lengths: torch.Tensor | None = None  # (B,) classification rows: each row's length (y is then a label per row)

    @property
    def supervised(self) -> int:
        """Targets learned: the loss of a step is normalised by their number (counted on the CPU: no sync)."""
        return int((self.y != IGNORE).sum())

    def to(self, device: torch.device, pin: bool = False) -> Batch:
        """The batch on `device`. With `pin` (for a GPU) each tensor is first copied to page-locked host memory,
        from which the copy to the GPU is asynchronous: it overlaps the work already queued, and the step never
        waits for it (from pageable memory `non_blocking` still waits). On a CPU `to` returns the batch's own."""

        def moved(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=True)

        x, y = moved(self.x), moved(self.y)
        positions, lengths = (None if t is None else moved(t) for t in self.extras())
        return Batch(x, y, self.tokens, positions, lengths)

    def extras(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return self.positions, self.lengths

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """What the model takes besides the ids: packed positions, or rows' lengths."""
        extra = {"positions": self.positions, "lengths": self.lengths}
        return {name: value for name, value in extra.items() if value is not None}


class StreamPosition(Protocol):
    """Where a stream of batches is: the TrainingState (training) or a fresh one (evaluation)."""

    data_generator: torch.Generator
    examples_drawn: int


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
    tokens: TokenFile, batch_size: int, block_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows: inputs x and targets y (x shifted by one token), int64, shape (B, T). The
    windows of world_size processes are drawn, and this process's share (the rank-th batch_size of them) read."""
    if len(tokens) < block_size + 1:
        raise StudioError(
            f"the {tokens.path.stem} split has {len(tokens)} tokens, fewer than "
            f"model.block_size + 1 = {block_size + 1}; lower model.block_size or use more data"
        )
    starts = torch.randint(len(tokens) - block_size, (batch_size * world_size,), generator=generator).numpy()
    starts = starts[rank * batch_size : (rank + 1) * batch_size]
    windows = tokens.ids[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))
    return x, y


class WindowStream:
    """Random windows of plain text, this process's share of every process's: every target is learned."""

    def __init__(self, tokens: TokenFile, batch_size: int, block_size: int, rank: int = 0, world_size: int = 1):
        self.tokens, self.batch_size, self.block_size = tokens, batch_size, block_size
        self.rank, self.world_size = rank, world_size

    def next(self, position: StreamPosition) -> Batch:
        generator = position.data_generator
        x, y = sample_batch(self.tokens, self.batch_size, self.block_size, generator, self.rank, self.world_size)
        return Batch(x, y, x.numel())


# ---- masked language modelling ------------------------------------------------------------------------------
MASK_RATE, MASK_TOKEN_SHARE, RANDOM_TOKEN_SHARE = 0.15, 0.8, 0.1  # BERT's: of the chosen, 80% [MASK], 10% random


def mask_tokens(
    ids: torch.Tensor, generator: torch.Generator, mask_id: int, vocab_size: int, special_ids: list[int]
) -> Batch:
    """BERT's masking of ids (B, T): each token but the special ones is chosen with probability 15%; of those,
    80% become [MASK], 10% a random token, 10% stay as they are. Targets are the chosen tokens' originals (the
    loss is taken there only), IGNORE elsewhere. Every draw comes from `generator`, so a resume repeats it."""
    chosen = (torch.rand(ids.shape, generator=generator) < MASK_RATE) & ~torch.isin(ids, torch.tensor(special_ids))
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < MASK_TOKEN_SHARE), mask_id, ids)
    swapped = chosen & (roll >= MASK_TOKEN_SHARE) & (roll < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    inputs = torch.where(swapped, random_ids, inputs)
    return Batch(inputs, torch.where(chosen, ids, IGNORE), ids.numel())


class MaskedWindowStream:
    """An encoder's batches: random windows of the text framed as `[CLS] window [SEP]`, masked by mask_tokens.
    Every process frames and masks the windows of all processes (the masking draws from the shared generator
    too) and keeps its share, so the masks, like the windows, do not depend on the number of processes."""

    def __init__(
        self,
        tokens: TokenFile,
        batch_size: int,
        block_size: int,
        special: dict[str, int],
        vocab_size: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.windows = WindowStream(tokens, batch_size * world_size, block_size - 2)  # room for [CLS] and [SEP]
        self.special, self.vocab_size = special, vocab_size
        self.share = slice(rank * batch_size, (rank + 1) * batch_size)

    def next(self, position: StreamPosition) -> Batch:
        window = self.windows.next(position).x
        frame = (
            torch.full((window.size(0), 1), self.special["cls"]),
            torch.full((window.size(0), 1), self.special["sep"]),
        )
        ids = torch.cat([frame[0], window, frame[1]], dim=1)
        special = list(self.special.values())
        masked = mask_tokens(ids, position.data_generator, self.special["mask"], self.vocab_size, special)
        x, y = masked.x[self.share], masked.y[self.share]
        return Batch(x, y, x.numel())


# ---- examples ---------------------------------------------------------------------------------------------
class ExampleFile:
    """One split of an example dataset: `<split>.bin` (ids), `<split>.idx` (the int64 start of every example, and
    the end), and `<split>.mask` (1: learned) for chat examples or `<split>.labels` (int64) for labeled ones."""

    def __init__(self, bin_path: Path, dtype: str):
        self.ids = np.memmap(bin_path, dtype=dtype, mode="r")
        self.offsets = np.fromfile(bin_path.with_suffix(".idx"), dtype=np.int64)
        masks, labels = bin_path.with_suffix(".mask"), bin_path.with_suffix(".labels")
        self.mask = np.memmap(masks, dtype=np.uint8, mode="r") if masks.is_file() else None
        self.labels = np.fromfile(labels, dtype=np.int64) if labels.is_file() else None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def pair(self, index: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of one example (at most block_size of each), targets IGNORE where not learned."""
        start, end = self.offsets[index], min(self.offsets[index + 1], self.offsets[index] + block_size + 1)
        ids = self.ids[start:end].astype(np.int64)
        targets = np.where(self.mask[start + 1 : end] > 0, ids[1:], IGNORE)
        return ids[:-1], targets

    def prompt(self, index: int) -> np.ndarray:
        """A chat example's ids before its first learned token: the conversation up to its first answer, as the
        chat template rendered it (the generation prompt included)."""
        start, end = self.offsets[index], self.offsets[index + 1]
        first_learned = int(np.argmax(self.mask[start:end] > 0))
        return self.ids[start : start + first_learned].astype(np.int64)

    def text_ids(self, index: int) -> np.ndarray:
        """A labeled example's ids."""
        return self.ids[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)


class ExampleStream:
    """Examples in seeded epochs; this process takes every world_size-th of the global order, from `rank`."""

    def __init__(
        self,
        examples: ExampleFile,
        batch_size: int,
        block_size: int,
        packing: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        pad_id: int = 0,
    ):
        if len(examples) == 0:
            raise StudioError("the dataset has no examples in this split; add data or lower data.val_fraction")
        self.examples, self.batch_size, self.block_size, self.packing = examples, batch_size, block_size, packing
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.pad_id = pad_id  # labeled rows are padded with it
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    def example_index(self, drawn: int) -> int:
        """The example this process draws as its `drawn`-th."""
        overall = drawn * self.world_size + self.rank
        epoch, within = divmod(overall, len(self.examples))
        if not self.shuffle:
            return within
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(len(self.examples), generator=generator).numpy())
        return int(self._order[1][within])

    def next(self, position: StreamPosition) -> Batch:
        if self.examples.labels is not None:
            return self._labeled(position)
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = []
        if not self.packing:
            for _ in range(self.batch_size):
                rows.append([self.examples.pair(self.example_index(position.examples_drawn), self.block_size)])
                position.examples_drawn += 1
            return padded_examples(rows, max(len(row[0][0]) for row in rows), packed=False)
        rows, used = [[]], 0
        while True:  # fill the rows in order; the example that fits no more waits for the next batch
            pair = self.examples.pair(self.example_index(position.examples_drawn), self.block_size)
            if used + len(pair[0]) > self.block_size:
                if len(rows) == self.batch_size:
                    return padded_examples(rows, self.block_size, packed=True)
                rows.append([])
                used = 0
            rows[-1].append(pair)
            used += len(pair[0])
            position.examples_drawn += 1

    def _labeled(self, position: StreamPosition) -> Batch:
        """Classification rows: batch_size examples right-padded with pad_id, a label each, and their lengths."""
        indices = []
        for _ in range(self.batch_size):
            indices.append(self.example_index(position.examples_drawn))
            position.examples_drawn += 1
        return labeled_batch(self.examples, indices, self.pad_id)


def labeled_batch(examples: ExampleFile, indices: list[int], pad_id: int) -> Batch:
    """The labeled examples at indices, right-padded with pad_id to the longest."""
    rows = [examples.text_ids(i) for i in indices]
    x = np.full((len(rows), max(map(len, rows))), pad_id, dtype=np.int64)
    for row, ids in enumerate(rows):
        x[row, : len(ids)] = ids
    lengths = torch.tensor([len(ids) for ids in rows])
    labels = torch.from_numpy(examples.labels[indices].copy())
    return Batch(torch.from_numpy(x), labels, int(lengths.sum()), lengths=lengths)


def padded_examples(rows: list[list[tuple[np.ndarray, np.ndarray]]], length: int, packed: bool) -> Batch:
    """Rows of (inputs, targets) pairs laid end to end and padded to `length`: inputs 0, targets IGNORE; packed
    rows get each example's positions (and the padding its own, so it forms a segment of its own)."""
    x = np.zeros((len(rows), length), dtype=np.int64)
    tokens = sum(len(inputs) for pairs in rows for inputs, _ in pairs)
    y = np.full((len(rows), length), IGNORE, dtype=np.int64)
    positions = np.zeros((len(rows), length), dtype=np.int64)
    for row, pairs in enumerate(rows):
        at = 0
        for inputs, targets in pairs:
            x[row, at : at + len(inputs)] = inputs
            y[row, at : at + len(inputs)] = targets
            positions[row, at : at + len(inputs)] = np.arange(len(inputs))
            at += len(inputs)
        positions[row, at:] = np.arange(length - at)
    return Batch(torch.from_numpy(x), torch.from_numpy(y), tokens, torch.from_numpy(positions) if packed else None)


# ---- Poisson sampling (differentially private training) -------------------------------------------------------
class PoissonStream:
    """DP-SGD's batches: every one of `units` is in a step's batch with probability `rate` = batch_size / units,
    independently, so a batch holds batch_size units on average. An empty draw is one row that learns nothing
    (`nothing_learned`): its gradient is zero and the step is noise alone, as DP-SGD's empty batch is."""

    def __init__(self, units: int, batch_size: int, batch_of: Callable[[list[int]], Batch], what: str):
        if batch_size > units:
            raise StudioError(f"train.batch_size {batch_size} is more than the {units} {what} private training "
                              f"samples from; lower it below {units} or add data")  # fmt: skip
        self.units, self.rate, self.batch_of = units, batch_size / units, batch_of

    def next(self, position: StreamPosition) -> Batch:
        chosen = torch.rand(self.units, generator=position.data_generator) < self.rate
        indices = chosen.nonzero().flatten().tolist()
        return self.batch_of(indices) if indices else nothing_learned(self.batch_of([0]))


def nothing_learned(batch: Batch) -> Batch:
    """The batch with no target learned and no token counted."""
    return Batch(batch.x, torch.full_like(batch.y, IGNORE), 0, batch.positions, batch.lengths)


def private_windows(tokens: TokenFile, batch_size: int, block_size: int) -> PoissonStream:
    """Plain text cut into disjoint windows of block_size (+1 for the last target), Poisson-sampled: a token is in
    one unit only, so the accountant's unit is a window of the corpus."""
    units = max(len(tokens) - 1, 0) // block_size

    def windows(indices: list[int]) -> Batch:
        starts = np.asarray(indices)[:, None] * block_size + np.arange(block_size + 1)
        rows = torch.from_numpy(tokens.ids[starts].astype(np.int64))
        return Batch(rows[:, :-1].contiguous(), rows[:, 1:].contiguous(), rows[:, :-1].numel())

    return PoissonStream(units, batch_size, windows, f"windows of {block_size} tokens")


def private_examples(examples: ExampleFile, batch_size: int, block_size: int, pad_id: int) -> PoissonStream:
    """Examples (chat rows, or labeled rows) Poisson-sampled, each row one example, right-padded."""

    def rows(indices: list[int]) -> Batch:
        if examples.labels is not None:
            return labeled_batch(examples, indices, pad_id)
        pairs = [[examples.pair(index, block_size)] for index in indices]
        return padded_examples(pairs, max(len(row[0][0]) for row in pairs), packed=False)

    return PoissonStream(len(examples), batch_size, rows, "examples")
