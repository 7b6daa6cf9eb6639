"""What the privacy and contamination rules cost `prepare`: speed with and without redaction, and the peak memory
of near-duplicate removal as the corpus grows.

1. Speed: a corpus of support-ticket-like documents (`--mb` MB; every few lines an e-mail address, a phone number,
   a card or a token among decoys, tests/pii_corpus.py's planter) prepared through the CLI with a char tokenizer
   (the read, scan and encode passes, no BPE training), without and with `--redact all`: MB/s of text each.
2. Memory: generated documents of 80 words (10k, 40k, 160k by default; a tenth of them near-copies) prepared with
   `--near-dedup 0.8` and without: the peak RSS of each (`/usr/bin/time -v`), so the index's part shows.

    python benchmarks/cleaning_cost.py [--mb 20] [--docs 10000 40000 160000]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.pii_corpus

from tests.pii_corpus import labelled_documents  # noqa: E402


def prepare(source: Path, home: Path, *options: str) -> tuple[int, float, dict]:
    """Peak RSS (bytes), wall seconds and the meta of `llm-studio prepare SOURCE --tokenizer char OPTIONS`."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", "llm-studio", "prepare", str(source), "--tokenizer", "char", "--name", "bench",
         *options],
        env={"LLM_STUDIO_HOME": str(home), "PATH": subprocess.os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    meta = json.loads((home / "datasets" / "bench" / "meta.json").read_text())
    return peak_kb * 1024, seconds, meta


def write_tickets(path: Path, megabytes: float) -> int:
    """Documents of planted personal data among decoys until `megabytes` MB; returns the bytes written."""
    written, seed = 0, 0
    with open(path, "w", encoding="utf-8") as file:
        while written < megabytes * 1_000_000:
            for text, _ in labelled_documents(200, seed=seed):
                line = json.dumps({"text": text}) + "\n"
                file.write(line)
                written += len(text)
            seed += 1
    return written


def write_pages(path: Path, count: int) -> None:
    """`count` documents of 80 words from a 20,000-word vocabulary; a tenth are earlier ones with 2 words changed."""
    rng = random.Random(0)
    vocabulary = [f"w{index}" for index in range(20_000)]
    kept: list[list[str]] = []
    with open(path, "w", encoding="utf-8") as file:
        for _ in range(count):
            if kept and rng.random() < 0.1:
                words = list(rng.choice(kept))
                for position in rng.sample(range(len(words)), 2):
                    words[position] = rng.choice(vocabulary)
            else:
                words = [rng.choice(vocabulary) for _ in range(80)]
                if len(kept) < 5000:
                    kept.append(words)
            file.write(json.dumps({"text": " ".join(words)}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--docs", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        tickets = root / "tickets.jsonl"
        size = write_tickets(tickets, args.mb)
        for label, options in (("plain", ()), ("--redact all", ("--redact", "all"))):
            _, seconds, meta = prepare(tickets, root / f"home-{len(options)}", *options)
            redacted = sum(meta.get("cleaning", {}).get("redacted", {}).values())
            print(f"speed {label:>13}: {size / 1e6:.1f} MB in {seconds:.1f} s = {size / 1e6 / seconds:.2f} MB/s "
                  f"({redacted:,} redactions)")  # fmt: skip
        for count in args.docs:
            pages = root / f"pages-{count}.jsonl"
            write_pages(pages, count)
            for label, options in (("plain", ()), ("--near-dedup 0.8", ("--near-dedup", "0.8"))):
                peak, seconds, meta = prepare(pages, root / f"home-{count}-{len(options)}", *options)
                removed = meta["documents"]["dropped"].get("near_duplicate", 0)
                print(f"memory {count:>7,} docs {label:>16}: peak RSS {peak / 2**20:.0f} MiB, {seconds:.1f} s, "
                      f"{removed:,} near-duplicates removed")  # fmt: skip


if __name__ == "__main__":
    main()
