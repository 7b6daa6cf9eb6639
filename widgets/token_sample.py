"""The start of a dataset's training tokens with each token's boundaries visible: alternate backgrounds; in a
dataset of chat examples, the tokens the loss learns (answers and their end tokens) on green.

Decoded with the `tokenizers` library straight from train.bin (and train.mask; read with the array module, so no
numpy in the studio), one token at a time, so what is shown is exactly how the model will see the text.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from textual.content import Content
from textual.widgets import Static

if TYPE_CHECKING:
    from studio.data.prepare import Dataset

SAMPLE_TOKENS = 160
TOKEN_STYLES = ("on $primary 35%", "on $accent 35%")
LEARNED_STYLES = ("on $success 55%", "on $success 30%")
ARRAY_CODES = {"uint16": "H", "uint32": "I"}

TokenPiece = tuple[str, bool | None]  # the decoded token, and whether the loss learns it (None: plain text)


def read_token_pieces(dataset: Dataset, count: int = SAMPLE_TOKENS) -> list[TokenPiece]:
    """The first `count` tokens of train.bin, each decoded on its own, with its mask for chat examples. Call it
    from a worker: it loads the tokenizer (and studio.data.tokenizer imports numpy, kept out of the studio's
    start)."""
    from studio.data.tokenizer import load_tokenizer

    ids = array(ARRAY_CODES[dataset.dtype])  # train.bin is in native byte order (numpy's tofile), as array reads it
    with open(dataset.bin_path("train"), "rb") as file:
        ids.frombytes(file.read(count * ids.itemsize))
    learned: list[bool | None] = [None] * len(ids)
    masks = dataset.bin_path("train").with_suffix(".mask")
    if masks.is_file():  # chat examples (classification rows learn a label, not tokens)
        with open(masks, "rb") as file:
            learned = [bool(flag) for flag in file.read(len(ids))]
    tokenizer = load_tokenizer(dataset.tokenizer_path)
    return [(tokenizer.decode([token], skip_special_tokens=False), flag) for token, flag in zip(ids, learned)]


class TokenSample(Static):
    def show_pieces(self, pieces: list[TokenPiece]) -> None:
        self.update(token_content(pieces))


def token_content(pieces: list[TokenPiece]) -> Content:
    """Each piece on its own background (green when learned); a line break inside a token shows as ↵ so it has a
    visible cell."""
    parts = []
    for index, (piece, learned) in enumerate(pieces):
        parts += styled_token(piece, (LEARNED_STYLES if learned else TOKEN_STYLES)[index % 2])
    return Content.assemble(*parts)


def styled_token(piece: str, style: str) -> list[tuple[str, str]]:
    """A token's text as Content parts in `style`; a line break inside it shows as ↵ (a visible cell), then breaks."""
    parts = []
    lines = piece.split("\n")
    for line_index, line in enumerate(lines):
        if line_index < len(lines) - 1:
            parts.append((line + "↵", style))
            parts.append(("\n", ""))
        elif line:
            parts.append((line, style))
    return parts
