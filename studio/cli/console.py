"""What the CLI prints: a progress bar, tables, one line per event, streamed generations, dataset facts."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from studio.formatting import counted, format_bytes, format_count, format_memory, teacher_note
from studio.reports.leaderboard import COLUMNS, standing_cells

if TYPE_CHECKING:  # the CLI's first line prints before numpy and tokenizers (the data package) are imported
    from studio.data.meta import DatasetMeta


class ProgressBar:
    """A one-line progress bar on stderr for prepare's stages; silent when stderr is not a terminal."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.last_draw = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last_draw < 0.1 and done < total):
            return
        self.last_draw = now
        fraction = done / total if total else 1.0
        filled = int(30 * fraction)
        sys.stderr.write(f"\r{stage:>10} [{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def print_leaderboard(tasks: dict) -> None:
    """One table per task (studio.reports.leaderboard), best first."""
    now = time.time()
    for label, standings in tasks.items():
        print(f"task {label}")
        rows = [(str(rank), *standing_cells(standing, now)) for rank, standing in enumerate(standings, 1)]
        print_table(("#", *(column.upper() for column in COLUMNS)), rows)
        print()


def print_dataset(dataset) -> None:
    meta = dataset.meta
    documents = meta.documents
    what = "examples" if dataset.has_examples else "documents"
    print(
        f"dataset {dataset.name}: {documents.kept:,} {what} kept of {documents.seen:,}"
        f"{dropped_text(meta)}; {meta.tokens['train']:,} train + {meta.tokens['val']:,} val "
        f"tokens; vocab {meta.vocab_size:,}; {meta.chars_per_token:.2f} chars/token"
    )
    print(f"held out for validation: {meta.held_out()}")
    if meta.bytes_replaced:
        print(f"note: {meta.bytes_replaced:,} bytes were not valid UTF-8 and were replaced (--strict refuses them)")
    if meta.empty_rows:
        empty = counted(meta.empty_rows, "row")
        print(f"note: {empty} had null or empty text and were skipped (--strict refuses them)")
    print_cleaning(meta)
    print(f"folder: {dataset.path}")


def print_cleaning(meta: DatasetMeta, preview: int = 5) -> None:
    """What redaction, near-dedup and decontamination did: counts, the first redactions in context, sample pairs,
    the evaluation rows matched."""
    cleaning, dropped = meta.cleaning, meta.documents.dropped
    if cleaning.redacted:
        counts = ", ".join(f"{count:,} {kind}" for kind, count in cleaning.redacted.items())
        print(f"redacted: {counts}")
        for shown in cleaning.redactions[:preview]:
            print(f"  {shown['where']}: {shown['context']}")
    if dropped.get("near_duplicate"):
        print(f"near-duplicates removed: {dropped['near_duplicate']:,} (kept {meta.documents.kept:,})")
        for pair in cleaning.near_duplicates[:preview]:
            print(f"  {pair['removed']}  ~{pair['similarity']}~  {pair['kept']}")
    if dropped.get("contaminated"):
        rows = counted(cleaning.contaminating_rows, "evaluation row")
        print(f"contaminated: {dropped['contaminated']:,} dropped, matching {rows}")
        for match in cleaning.contaminated[:preview]:
            print(f"  {match['dropped']} shares an n-gram with {match['matched']}")


def dropped_text(meta: DatasetMeta) -> str:
    """What preparing left out or cut, as ` (2 duplicate, 3 truncated)`; empty when nothing."""
    counts = {**meta.documents.dropped, "truncated": meta.truncated}
    text = ", ".join(f"{count:,} {rule.replace('_', ' ')}" for rule, count in counts.items() if count)
    return f" ({text})" if text else ""


def print_dataset_note(config) -> None:
    """Before a launch on examples (chat, classification): how many, how many were cut or left out, the classes."""
    from studio.data.prepare import open_dataset

    dataset = open_dataset(config.data.dataset)
    meta = dataset.meta
    if not dataset.has_examples:
        return
    examples = meta.examples
    kind = "classification rows" if meta.labels else f"examples ({meta.row_format})"
    print(f"data: {examples['train']:,} train + {examples['val']:,} val {kind}{dropped_text(meta)}")
    print(f"held out for validation: {meta.held_out()}")
    if meta.labels:
        counts = meta.class_counts["train"]
        print(f"classes: {', '.join(f'{label} {counts.get(str(label), 0):,}' for label in meta.labels)}")
    for warning in meta.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def print_method_sizes(config) -> None:
    """Before a launch: the parameters that train, of how many, and the memory one process needs (an estimate)."""
    from studio.data.prepare import open_dataset
    from studio.hf.folder import run_facts
    from studio.runs.prepare import resolve_teacher
    from studio.sizing.sizes import run_sizes

    train, dataset = config.train, open_dataset(config.data.dataset)
    num_labels = len(dataset.meta.labels)
    teacher_params = resolve_teacher(config, dataset).params if config.distill.teacher else 0
    sizes = run_sizes(config, run_facts(config), num_labels, teacher_params)
    method = train.method if train.method == "full" else f"{train.method} rank {train.lora_rank}"
    targets = "|".join(train.lora_targets) or "every linear layer"
    teacher = teacher_note(teacher_params) if config.distill.teacher else ""
    print(
        f"model: {format_count(sizes.total)} parameters, {format_count(sizes.trainable)} trainable ({method}"
        f"{'' if train.method == 'full' else f' on {targets}'}){teacher}; about {format_bytes(sizes.memory['total'])} "
        f"per process for batch {train.batch_size} × context {config.model.block_size}"
    )


def print_steps(config) -> None:
    """Before a launch: the steps and the epochs they make ("300 steps ≈ 960 epochs of 5 examples")."""
    from studio.data.prepare import open_dataset
    from studio.epochs import steps_and_epochs

    print(f"length: {steps_and_epochs(config, open_dataset(config.data.dataset).meta)}")


def print_lr(config) -> None:
    """Before a launch: the learning rate and where it came from; a warning when it is far from the method's."""
    from studio.method_defaults import lr_note, lr_warning

    print(lr_note(config))
    if warning := lr_warning(config):
        print(f"warning: {warning}", file=sys.stderr)


def memory_summary(events: list[dict]) -> str | None:
    """After a run: its memory per process, estimated beside the measured peak (of its surviving timeline's
    events), or None when its trainer reported none."""
    running = [e for e in events if e.get("kind") == "status" and e.get("state") == "running"]
    if not running or running[-1].get("mem_estimate") is None:
        return None
    facts = running[-1]
    peaks = [e["mem_peak"] for e in events if e.get("kind") == "train" and e.get("mem_peak") is not None]
    peak = max(peaks, default=None)
    return format_memory(facts["mem_estimate"], peak, facts.get("mem_measure"), facts.get("mem_baseline"))


def print_streams(stream, prompts: list[str]) -> None:
    """Print each prompt and its continuation in prompt order, live for the one being printed; a batch's
    other rows are held until their turn."""
    held = [[] for _ in prompts]
    done = [False] * len(prompts)
    current = 0

    def begin(index: int) -> None:
        if len(prompts) > 1:
            separator = "" if index == 0 else "\n"
            sys.stdout.write(f"{separator}--- prompt {index + 1} ---\n")
        sys.stdout.write(prompts[index] + "".join(held[index]))
        sys.stdout.flush()

    begin(0)
    for index, delta in stream:
        if delta is None:
            done[index] = True
        elif index == current:
            sys.stdout.write(delta)
            sys.stdout.flush()
        else:
            held[index].append(delta)
        while done[current] and current + 1 < len(prompts):
            current += 1
            begin(current)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_token_looks(looks) -> None:
    """One line per generated token: its probability, the entropy there, and the likeliest tokens."""
    for look in looks:
        alternatives = " · ".join(f"{text!r} {probability:.4f}" for text, probability in look.alternatives)
        print(f"  {look.text!r:>14}  p {look.probability:.4f}  H {look.entropy:.3f}  | {alternatives}")


ATTENDED_SHOWN = 4  # context tokens listed per generated token, the most weighed first


def print_token_attention(attentions) -> None:
    """One line per generated token: the context tokens the chosen head weighed most when it was chosen, each with
    its position in that context and its weight."""
    if attentions:
        print(f"  attention of layer {attentions[0].layer}, head {attentions[0].head}: the context tokens weighed most")
    for attention in attentions:
        order = sorted(range(len(attention.weights)), key=lambda at: -attention.weights[at])[:ATTENDED_SHOWN]
        weighed = " · ".join(f"{attention.context[at]!r}@{at} {attention.weights[at]:.3f}" for at in order)
        print(f"  {attention.token!r:>14}  <- {weighed}")
