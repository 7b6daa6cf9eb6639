"""Tokenizers: byte-level BPE or one token per character, saved as Hugging Face `tokenizer.json`.

Both decode back to exactly the text they encoded. Encoding a corpus goes through an encoder
(`encoder_for`) that returns numpy arrays: the BPE one hands batches of pieces to the Rust
tokenizer, the character one looks characters up in a numpy table (about ten times faster).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from studio.errors import StudioError

EOT = "<|endoftext|>"  # ends every document
UNK = "<|unk|>"  # character level only: a character the corpus did not have
PAD, CLS, SEP, MASK = "[PAD]", "[CLS]", "[SEP]", "[MASK]"  # an encoder's: padding, start, end, the blank to fill
ENCODER_TOKENS = {"pad": PAD, "cls": CLS, "sep": SEP, "mask": MASK}
PIECE_CHARS = 1 << 16  # BPE: text goes to the Rust side in pieces of about this size, in parallel
# BPE training's time and memory grow with the longest pre-token: a run without spaces longer than this (minified
# code, base64, a corpus that is one 60 MB "word") is cut into pre-tokens of at most this many bytes.
MAX_PRETOKEN_BYTES = 128
# ... and its memory with the length of the distinct pre-tokens it sees (about 100 bytes per character): it learns
# its merges from at most this many characters, pieces taken evenly across the corpus.
BPE_TRAIN_CHARS = 8_000_000


def train_bpe(texts: Iterable[str], vocab_size: int, total_chars: int = 0) -> Tokenizer:
    """A byte-level BPE of at most vocab_size tokens (fewer when the corpus runs out of merges), learnt from
    `texts` (`total_chars` characters in all), or from an even sample of them when that is over BPE_TRAIN_CHARS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False),  # maps every byte to one visible character
            pre_tokenizers.Split(Regex(f".{{1,{MAX_PRETOKEN_BYTES}}}"), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # all 256 bytes: any text encodes
    # the trainer reads hundreds of texts ahead: small pieces keep that buffer small
    pieces = (piece for text in texts for piece in split_before_newlines(text, PIECE_CHARS))
    every = -(-total_chars // BPE_TRAIN_CHARS)  # keep one piece in `every`
    tokenizer.train_from_iterator(itertools.islice(pieces, 0, None, max(every, 1)), trainer)
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


def add_encoder_tokens(tokenizer: Tokenizer) -> None:
    """An encoder's special tokens, and a post-processor that writes `[CLS] text [SEP]` (pairs: `[CLS] a [SEP] b
    [SEP]`), so that encoding with special tokens, in the studio or in AutoTokenizer, frames the text as BERT's."""
    tokenizer.add_special_tokens(list(ENCODER_TOKENS.values()))
    cls, sep = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, cls), (SEP, sep)]
    )


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

    The byte-level pre-tokenizer already splits words there, so the pieces encode as the whole would. Text with
    no line break for 4 * size characters is cut there all the same (such text is not prose or code).
    """
    pieces, start = [], 0
    while len(text) - start > size:
        found = text.find("\n", start + size, start + 4 * size)
        cut = found
        while cut > start and text[cut - 1] == "\n":  # before a run of newlines, not inside it
            cut -= 1
        if cut <= start:  # no line break within reach, or nothing but line breaks: cut there all the same
            cut = found if found > start else min(start + 4 * size, len(text))
        pieces.append(text[start:cut])
        start = cut
    if start < len(text) or not pieces:
        pieces.append(text[start:])
    return pieces
