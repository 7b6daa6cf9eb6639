"""Near-duplicate documents and rows (`data.near_dedup`): MinHash over shingles, LSH in bands, the threshold a
Jaccard similarity.

Each document's shingles (`data.near_dedup_shingles`: runs of WORD_SHINGLE lowercased words, or of CHAR_SHINGLE
characters) are fed to a datasketch MinHash of NUM_PERM permutations as the document streams. Its signature is cut
into bands of rows (datasketch's `_optimal_param` for the threshold, a missed pair weighed 0.95 against a false
candidate's 0.05: a candidate is confirmed before it counts, so a false one costs only a look-up; at 0.8 that is
16 bands of 8 rows, which makes pairs of similarity 0.85 candidates 99.4% of the time, where equal weights' 9 bands
of 13 made them 69%); two documents sharing a band are candidates, and a candidate is a near-duplicate when the
signatures' estimated Jaccard similarity reaches the threshold. The first document of a group is kept, the later
ones dropped.

The index lives in a SQLite file in the dataset's build folder, not in memory: each kept document's band keys and
its signature (NUM_PERM × 4 bytes), so a corpus larger than RAM is deduplicated in bounded memory (SQLite's page
cache). Figures: the README's *Cleaning: privacy, near-duplicates, contamination*.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

NUM_PERM = 128
WORD_SHINGLE = 5  # words per shingle
CHAR_SHINGLE = 5  # characters per shingle
PAIRS_KEPT = 10  # sample pairs recorded in the facts
SNIPPET = 80  # characters of each document of a sample pair
WORD = re.compile(r"\w+")


class Shingler:
    """A document's shingles as it streams in pieces: the last shingle's worth of words (or characters) carries
    over from one piece to the next, so the pieces give the shingles of the whole."""

    def __init__(self, unit: str) -> None:
        self.words = unit == "word"
        self.size = WORD_SHINGLE if self.words else CHAR_SHINGLE
        self.carried: list[str] | str = [] if self.words else ""
        self.short: list[str] | str = self.carried  # a document shorter than one shingle is its only shingle
        self.any = False

    def feed(self, text: str) -> list[bytes]:
        units = self.carried + (WORD.findall(text.lower()) if self.words else " ".join(text.lower().split()))
        joiner = " " if self.words else ""
        shingles = [joiner.join(units[i : i + self.size]).encode() for i in range(len(units) - self.size + 1)]
        self.any = self.any or bool(shingles)
        self.carried, self.short = units[-(self.size - 1) :], units
        return shingles

    def finish(self) -> list[bytes]:
        """The one shingle of a document too short to have any, else nothing."""
        joiner = " " if self.words else ""
        return [] if self.any or not self.short else [joiner.join(self.short).encode()]


class NearDuplicates:
    """The index of the documents kept so far; `check` says whether a new one is a near-duplicate of one of them
    (and records it as kept when it is not)."""

    def __init__(self, threshold: float, folder: Path | None) -> None:
        from datasketch import MinHash  # imports scipy: only when near-duplicates are looked for
        from datasketch.lsh import _optimal_param

        self.threshold = threshold
        self.bands, self.rows = _optimal_param(threshold, NUM_PERM, false_positive_weight=0.05,
                                               false_negative_weight=0.95)  # fmt: skip
        self.template = MinHash(num_perm=NUM_PERM, seed=1)
        handle, name = tempfile.mkstemp(prefix=".near-dedup-", suffix=".sqlite", dir=folder)
        os.close(handle)
        self.path = Path(name)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;"
            "CREATE TABLE bands (key INTEGER PRIMARY KEY, doc INTEGER) WITHOUT ROWID;"
            "CREATE TABLE docs (id INTEGER PRIMARY KEY, label TEXT, signature BLOB);"
        )
        self.pairs: list[dict[str, str]] = []

    def minhash(self):
        """An empty MinHash of the index's permutations, for a document to feed its shingles to."""
        from datasketch import MinHash

        return MinHash(num_perm=NUM_PERM, permutations=self.template.permutations, scheme=self.template.scheme)

    def check(self, signature: np.ndarray, label: str) -> bool:
        """Whether the document is a near-duplicate of a kept one (the pair recorded); else it is kept: indexed."""
        keys = [self._band_key(band, signature) for band in range(self.bands)]
        marks = ",".join("?" * len(keys))
        candidates = {doc for (doc,) in self.db.execute(f"SELECT doc FROM bands WHERE key IN ({marks})", keys)}
        for doc in sorted(candidates):
            kept_label, blob = self.db.execute("SELECT label, signature FROM docs WHERE id = ?", (doc,)).fetchone()
            similarity = float(np.mean(np.frombuffer(blob, dtype=signature.dtype) == signature))
            if similarity >= self.threshold:
                if len(self.pairs) < PAIRS_KEPT:
                    self.pairs.append({"kept": kept_label, "removed": label, "similarity": f"{similarity:.2f}"})
                return True
        cursor = self.db.execute("INSERT INTO docs (label, signature) VALUES (?, ?)", (label, signature.tobytes()))
        self.db.executemany("INSERT OR IGNORE INTO bands VALUES (?, ?)", [(key, cursor.lastrowid) for key in keys])
        return False

    def _band_key(self, band: int, signature: np.ndarray) -> int:
        part = signature[band * self.rows : (band + 1) * self.rows].tobytes()
        digest = hashlib.blake2b(part, digest_size=8, person=band.to_bytes(2, "little")).digest()
        return int.from_bytes(digest, "little") >> 1  # SQLite's integers are signed 64-bit

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def snippet(text: str) -> str:
    """The start of a document on one line, for a sample pair."""
    return " ".join(text[: SNIPPET * 2].split())[:SNIPPET]
