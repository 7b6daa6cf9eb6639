"""Tokenizers: byte-level BPE or one token per character, saved as Hugging Face `tokenizer.json`.

Both decode back to exactly the text they encoded. Encoding a corpus goes through an encoder
(`encoder_for`) that returns numpy arrays: the BPE one hands batches of pieces to the Rust
tokenizer, the character one looks characters up in a numpy table (about ten times faster).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from studio.errors import StudioError

EOT = "<|endoftext|>"  # ends every document
UNK = "<|unk|>"  # character level only: a character the corpus did not have
PIECE_CHARS = 1 << 16  # BPE: text goes to the Rust side in pieces of about this size, in parallel


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most vocab_size tokens (fewer when the corpus runs out of merges)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # all 256 bytes: any text encodes
    # the trainer reads hundreds of texts ahead: small pieces keep that buffer small
    pieces = (piece for text in texts for piece in split_before_newlines(text, PIECE_CHARS))
    tokenizer.train_from_iterator(pieces, trainer)
    return tokenizer


def train_char(chars: Iterable[str]) -> Tokenizer:
    """One token per character: EOT, UNK, then the characters in code point order."""
    vocab = {EOT: 0, UNK: 1}
    for char in sorted(set(chars)):
        vocab[char] = len(vocab)
    # a BPE without merges and without a pre-tokenizer splits text into characters, nothing else
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens([EOT, UNK])
    return tokenizer


def load_tokenizer(path: Path, fix: str = "prepare the dataset again") -> Tokenizer:
    """A tokenizer.json; a damaged one is a StudioError ending with `fix`."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises plain Exceptions
        raise StudioError(f"cannot load the tokenizer {path}: {str(error)[:120]}; {fix}") from None


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    return hashlib.blake2b(tokenizer.to_str().encode("utf-8"), digest_size=16).hexdigest()


# ---- encoding a corpus --------------------------------------------------------------------------
class BpeEncoder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        # corpus text that happens to contain "<|endoftext|>" is text, not the end of a document
        self.tokenizer.encode_special_tokens = True
        self.eot_id = tokenizer.token_to_id(EOT)

    def encode(self, text: str) -> np.ndarray:
        pieces = split_before_newlines(text, PIECE_CHARS)
        encodings = self.tokenizer.encode_batch_fast(pieces, add_special_tokens=False)
        return np.concatenate([np.array(encoding.ids, dtype=np.uint32) for encoding in encodings])


class CharEncoder:
    def __init__(self, tokenizer: Tokenizer) -> None:
        unk_id = tokenizer.token_to_id(UNK)
        self.table = np.full(0x110000, unk_id, dtype=np.uint32)  # token id by code point
        for token, token_id in tokenizer.get_vocab().items():
            if len(token) == 1:
                self.table[ord(token)] = token_id
        self.eot_id = tokenizer.token_to_id(EOT)

    def encode(self, text: str) -> np.ndarray:
        code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return self.table[code_points]


def encoder_for(tokenizer: Tokenizer, kind: str) -> BpeEncoder | CharEncoder:
    return CharEncoder(tokenizer) if kind == "char" else BpeEncoder(tokenizer)


def split_before_newlines(text: str, size: int) -> list[str]:
    """Pieces of about `size` characters, each cut just before a line break.

    The byte-level pre-tokenizer already splits words there, so the pieces encode as the whole would.
    """
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut > start and text[cut - 1] == "\n":  # before a run of newlines, not inside it
            cut -= 1
        if cut <= start:
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces
