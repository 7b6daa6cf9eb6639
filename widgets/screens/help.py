"""The keys of the screen `?` was pressed on, then the studio's own keys and what each tab is for. Scrolls."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Label, Static

from widgets.key_hints import KeyHints
from widgets.label_table import label_table
from widgets.screens.dialog import Sheet

KEYS = [
    ("1 … 5", "switch tab: Data, Model, Train, Runs, Playground"),
    ("ctrl+l", "launch a run of the config as set, from any tab (L too, outside text fields)"),
    ("ctrl+p", "command palette: prepare, launch, runs, theme, help, quit"),
    ("ctrl+t", "next theme"),
    ("tab / shift+tab", "move between fields; escape leaves a text field"),
    ("?", "this help"),
    ("q", "quit (runs keep training: they are separate processes)"),
]

TABS = [
    (
        "1 Data",
        "the corpus (built-in, text, rows of jsonl, json, csv, tsv, parquet or a datasets folder, compressed or "
        "not, a folder: b browses; a row file previews its columns; chat rows: alpaca, messages, ShareGPT; "
        "classification rows: text and label), cleaning and tokenizer options; p prepares it and shows the "
        "dataset's facts and its first tokens, boundaries coloured and the tokens the loss learns in green",
    ),
    (
        "2 Model",
        "presets with parameters and training memory (enter loads one), or a Hugging Face checkpoint folder "
        "(b browses) with its family, sizes, chat template and memory for full, LoRA and QLoRA; layers, heads, "
        "width, context, vocabulary, dropout, architecture: bad values are marked with the reason at once",
    ),
    (
        "3 Train",
        "optimizer, schedule (its learning-rate curve drawn live), steps, batch, precision, intervals, trackers, "
        "the task (language model or classification), init_from and the method (full, LoRA, DoRA, QLoRA) with "
        "what trains, a teacher to distill from; the equivalent `llm-studio train` command (y copies it); Launch, "
        "now or after a run chosen beside it (queued as its next stage, from its final checkpoint)",
    ),
    (
        "4 Runs",
        "every run with its status, step and losses, and the queue; enter opens its dashboard, w its sweep's "
        "results, l the leaderboard: every run and export evaluated on a task, best first (s sorts)",
    ),
    (
        "5 Playground",
        "generate text from a run's checkpoints: completion, or chat (m) with multi-turn history (n: new); l looks "
        "inside an answer (each token's probability, the entropy, the likeliest alternatives); a classifier gives its "
        "labels, a masked LM the fills of each [MASK]",
    ),
]


def screen_keys(screen: Screen) -> list[tuple[str, str]]:
    """Every key of `screen` as it stands (its focused widget's and its own), with what it does; the app's keys and
    moving between fields are in KEYS, below them."""
    keys = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        if binding.description and active.node is not screen.app and not binding.action.startswith("app.focus_"):
            keys.setdefault(screen.app.get_key_display(binding), binding.description)
    return list(keys.items())


class HelpScreen(Sheet[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, keys_here: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys_here = keys_here  # screen_keys() of the screen underneath

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help", classes="sheet"):
            yield Label("Keys here", classes="form-section")
            yield Static(label_table(self.keys_here), id="help-keys-here")
            yield Label("llm-studio: keys", classes="form-section")
            yield Static(label_table(KEYS))
            yield Label("Tabs", classes="form-section")
            yield Static(label_table(TABS))
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one("#help").focus()  # up, down, page up/down scroll a help taller than the terminal
