"""Tab 2, Model: the presets with their sizes, and the model's fields (app.config.model) with live validation
and a live parameter count and training-memory estimate (studio.sizes: pure Python, no torch)."""

from __future__ import annotations

from rich.table import Table
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Label, Static

from studio.config import RunConfig
from studio.formatting import format_bytes, format_count
from studio.presets import CHAR_VOCAB_GUESS, preset_table, preset_vocab
from studio.sizes import estimate_train_memory, param_count
from widgets.config_field import concerns, form_section, mark_invalid_fields
from widgets.messages import PresetChosen
from widgets.panes.config_pane import ConfigPane


class ModelPane(ConfigPane, Horizontal):
    SECTION = "model"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="model-side"):
            yield Label("Presets: enter loads one", classes="form-section")
            yield DataTable(id="model-presets", cursor_type="row", zebra_stripes=True)
            yield Static("", id="model-preset-description")
            yield Static("", id="model-size")
        with VerticalScroll(id="model-form", classes="form"):
            yield from form_section(
                "Model",
                "model.arch",
                "model.n_layer",
                "model.n_head",
                "model.n_embd",
                "model.block_size",
                "model.vocab_size",
                "model.dropout",
                "model.tie_embeddings",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("preset", "arch", "params", "memory")
        self.presets = preset_table()
        for row in self.presets:
            table.add_row(
                row["name"],
                row["arch"],
                format_count(row["params"]),
                format_bytes(row["memory"]["total"]),
                key=row["name"],
            )
        self.load_config()

    # ---- the app hands config changes down ------------------------------------------------------
    def load_config(self) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=table.get_row_index(self.app.config.preset))
        super().load_config()

    def config_changed(self, section: str) -> None:
        error = mark_invalid_fields(self, self.app.config)  # what ConfigPane does, keeping the message
        size = self.query_one("#model-size", Static)
        size.set_class(concerns(error, ("model",)), "-error")
        size.update(f"✗ {error}" if concerns(error, ("model",)) else size_table(self.app.config))

    # ---- presets ----------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#model-presets")
    def _describe_preset(self, event: DataTable.RowHighlighted) -> None:
        row = next(row for row in self.presets if row["name"] == event.row_key.value)
        note = "" if row["sets_model"] else " (training only: the default model, or init_from's on the Train tab)"
        self.query_one("#model-preset-description", Static).update(row["description"] + note)

    @on(DataTable.RowSelected, "#model-presets")
    def _choose_preset(self, event: DataTable.RowSelected) -> None:
        self.post_message(PresetChosen(event.row_key.value))


def size_table(config: RunConfig) -> Table:
    """Parameters and training memory of one process for the config as it stands."""
    vocab = preset_vocab(config)
    memory = estimate_train_memory(config.model, config.train, vocab)
    if config.model.vocab_size:
        vocab_note = "set here"
    elif config.data.tokenizer == "bpe":
        vocab_note = "the BPE size on the Data tab"
    else:
        vocab_note = f"a guess of {CHAR_VOCAB_GUESS} characters until the data is prepared"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("parameters", format_count(param_count(config.model, vocab)))
    table.add_row("vocabulary", f"{vocab:,} ({vocab_note})")
    table.add_row(
        "train memory",
        f"{format_bytes(memory['total'])} per process, batch {config.train.batch_size} "
        f"× context {config.model.block_size}",
    )
    for part in ("weights", "gradients", "optimizer", "activations"):
        table.add_row(f"  {part}", format_bytes(memory[part]))
    return table
