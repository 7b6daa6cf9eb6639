"""The memory of preparing a large parquet file: peak RSS of `llm-studio prepare` against the file's size.

Writes a parquet file of generated text rows (`--text-mb` MB of text, ~2 KB rows of words drawn from a fixed
vocabulary, an id column beside the text; pyarrow's default row groups and compression) to a temporary folder,
then prepares it through the CLI with a char tokenizer (the read, clean and encode passes; BPE training would
measure the tokenizer, not the reading) in a fresh LLM_STUDIO_HOME, under `/usr/bin/time -v`. The same command
on a 1-row parquet file gives the floor (the interpreter and its imports). Reported: file size, text size,
rows, row groups, peak RSS of both runs, wall time and MB/s of text.

    python benchmarks/parquet_prepare_memory.py [--text-mb 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROW_CHARS = 2000
ROWS_PER_WRITE = 20_000


def write_parquet(path: Path, text_mb: int) -> tuple[int, int]:
    """Rows of random words until text_mb MB of text; returns (rows, text bytes)."""
    generator = np.random.default_rng(0)
    words = np.array(["".join(generator.choice(list("abcdefghijklmnopqrstuvwxyz"), size=n)) for n in
                      generator.integers(2, 10, size=5000)])  # fmt: skip
    rows, text_bytes, target = 0, 0, text_mb * 1_000_000
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        while text_bytes < target:
            picks = words[generator.integers(0, len(words), size=(ROWS_PER_WRITE, ROW_CHARS // 6))]
            texts = [" ".join(row) + "." for row in picks]
            writer.write_table(pa.table({"id": np.arange(rows, rows + len(texts)), "text": texts}, schema=schema))
            rows += len(texts)
            text_bytes += sum(map(len, texts))
    return rows, text_bytes


def prepare(source: Path, home: Path) -> tuple[int, float, dict]:
    """Peak RSS (bytes) and wall seconds of `llm-studio prepare SOURCE --tokenizer char`, and the dataset's meta."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", "llm-studio", "prepare", str(source), "--tokenizer", "char", "--name", "bench"],
        env={"LLM_STUDIO_HOME": str(home), "PATH": subprocess.os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - started
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    meta = json.loads((home / "datasets" / "bench" / "meta.json").read_text())
    return peak_kb * 1024, seconds, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-mb", type=int, default=300)
    parser.add_argument("--keep", type=Path, help="write the files here (kept) instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        large, tiny = folder / "large.parquet", folder / "tiny.parquet"
        rows, text_bytes = write_parquet(large, args.text_mb)
        pq.write_table(pa.table({"id": [0], "text": ["a tiny file to measure the floor. " * 4]}), tiny)
        floor, _, _ = prepare(tiny, folder / "home-tiny")
        peak, seconds, meta = prepare(large, folder / "home-large")
        size = large.stat().st_size
        figures = {
            "parquet_bytes": size,
            "text_bytes": text_bytes,
            "rows": rows,
            "row_groups": pq.ParquetFile(large).metadata.num_row_groups,
            "peak_rss_bytes": peak,
            "floor_rss_bytes": floor,
            "seconds": round(seconds, 1),
            "text_mb_per_s": round(text_bytes / 1e6 / seconds, 2),
            "file_mb_per_s": round(size / 1e6 / seconds, 2),
            "tokens": meta["tokens"],
            "documents": meta["documents"]["kept"],
        }
        print(json.dumps(figures, indent=2))
        print(
            f"parquet {size / 1e6:.0f} MB ({text_bytes / 1e6:.0f} MB of text, {rows:,} rows, "
            f"{figures['row_groups']} row groups): peak RSS {peak / 1e6:.0f} MB (floor {floor / 1e6:.0f} MB), "
            f"{seconds:.0f} s, {figures['text_mb_per_s']} MB/s of text"
        )


if __name__ == "__main__":
    main()
