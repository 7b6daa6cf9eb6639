"""Tab 2, Model: the presets with their sizes, and the model's fields (app.config.model) with live validation
and a live parameter count and training-memory estimate (studio.sizing.sizes: pure Python, no torch); or a Hugging Face
checkpoint folder to start from (train.init_from), with its family, sizes, chat template and the memory of each
method, while the fields of a model from scratch hide. The folder is read in a thread worker: studio.hf.folder asks a
child process what transformers builds."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Label, Static

from studio.config import RunConfig
from studio.formatting import format_bytes, format_count
from studio.hub_cache import is_hub_name
from studio.presets import CHAR_VOCAB_GUESS, preset_table, preset_vocab
from studio.sizing.hf_facts import HFFacts
from studio.sizing.sizes import estimate_train_memory, method_sizes, param_count
from widgets.config_field import ConfigField, concerns, form_section, mark_invalid_fields
from widgets.messages import CheckpointChosen, PresetChosen
from widgets.panes.config_pane import ConfigPane
from widgets.screens.file_picker import FilePickerScreen
from widgets.worker_errors import ReportsWorkerErrors

CHECKPOINT_PICKER_TITLE = "Choose a Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)"
METHODS = ("full", "lora", "qlora")
# what a checkpoint brings with its weights (studio.runs.prepare takes its model whole): the fields of a model
# from scratch, hidden while one is the model; the context stays, trained up to the checkpoint's own
FROM_SCRATCH_KEYS = (
    "model.arch",
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "model.vocab_size",
    "model.dropout",
    "model.tie_embeddings",
)
CHECKPOINT_MODEL_NOTE = (
    "A checkpoint brings its own model: its family, layers, width, heads and vocabulary come from its config. "
    "The context trains up to the checkpoint's own."
)


class ModelPane(ReportsWorkerErrors, ConfigPane, Horizontal):
    SECTION = "model"
    shown_folder: str | None = None  # the checkpoint folder whose facts are shown

    BINDINGS = [Binding("b", "browse_checkpoint", "Checkpoint folder")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="model-side"):
            yield Label("Presets: enter loads one", classes="form-section")
            yield DataTable(id="model-presets", cursor_type="row", zebra_stripes=True)
            yield Static("", id="model-preset-description")
            with Vertical(id="model-cached-section"):  # shown when the cache holds causal LMs
                yield Label("Hugging Face cache: enter starts from one", classes="form-section")
                yield DataTable(id="model-cached", cursor_type="row", zebra_stripes=True)
            with Horizontal(classes="button-row"):
                yield Button("Checkpoint folder…", id="model-checkpoint", compact=True)
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
            yield Static(CHECKPOINT_MODEL_NOTE, id="model-from-checkpoint")

    def on_mount(self) -> None:
        table = self.query_one("#model-presets", DataTable)
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
        self.query_one("#model-cached", DataTable).add_columns("model", "family", "weights", "chat template")
        self.query_one("#model-cached-section").display = False
        self.list_cached_models()
        self.load_config()

    # ---- the app hands config changes down ------------------------------------------------------
    def load_config(self) -> None:
        table = self.query_one("#model-presets", DataTable)
        table.move_cursor(row=table.get_row_index(self.app.config.preset))
        table.show_cursor = not self.app.config.train.init_from  # a checkpoint's model is the model, not the preset's
        super().load_config()

    def config_changed(self, section: str) -> None:
        error = mark_invalid_fields(self, self.app.config)  # what ConfigPane does, keeping the message
        size = self.query_one("#model-size", Static)
        init_from = self.app.config.train.init_from
        self._show_model_fields(from_scratch=not init_from)
        if init_from and (Path(init_from).expanduser().is_dir() or is_hub_name(init_from)):  # its facts and memory
            size.set_class(False, "-error")
            if self.shown_folder != init_from:
                self.shown_folder = init_from
                size.update(f"reading {init_from}…")
            self.read_checkpoint_folder(self.app.config.copy())
            return
        self.shown_folder = None
        size.set_class(concerns(error, ("model",)), "-error")
        if concerns(error, ("model",)):
            size.update(f"✗ {error}")
        elif self.app.config.model.pretrained:  # its sizes are its folder's, which transformers builds
            size.update("the sizes show once train.init_from names the Hugging Face folder")
        else:
            size.update(size_table(self.app.config))

    def _show_model_fields(self, from_scratch: bool) -> None:
        """A model from scratch shows its fields; a checkpoint's model is its own, so only the context shows."""
        for field in self.query(ConfigField):
            field.display = from_scratch or field.config_key not in FROM_SCRATCH_KEYS
        self.query_one("#model-from-checkpoint", Static).display = not from_scratch

    # ---- a checkpoint folder ----------------------------------------------------------------------------
    @on(Button.Pressed, "#model-checkpoint")
    def action_browse_checkpoint(self) -> None:
        init_from = Path(self.app.config.train.init_from or ".").expanduser()
        start = init_from.parent if init_from.is_dir() else Path.cwd()
        self.app.push_screen(FilePickerScreen(start.resolve(), CHECKPOINT_PICKER_TITLE), self._picked)

    def _picked(self, path: Path | None) -> None:
        if path is not None:
            self.post_message(CheckpointChosen(str(path if path.is_dir() else path.parent)))

    @work(thread=True, exclusive=True, group="checkpoint", exit_on_error=False)
    def read_checkpoint_folder(self, config: RunConfig) -> None:
        from studio.hf.folder import read_hf_folder
        from studio.hub_cache import local_model_folder

        hf = read_hf_folder(local_model_folder(config.train.init_from))
        config.model.block_size = min(config.model.block_size, hf.facts.context or config.model.block_size)
        table = checkpoint_table(hf.facts, hf.chat_template is not None, config, hf.path, hf.tokenizer_note)
        self.app.call_from_thread(self.query_one("#model-size", Static).update, table)

    def worker_failed(self, group: str, line: str) -> None:
        """A folder that cannot be used says why where its facts would be."""
        if group != "checkpoint":
            return super().worker_failed(group, line)
        size = self.query_one("#model-size", Static)
        size.set_class(True, "-error")
        size.update(f"✗ {line}")

    # ---- the models in the Hugging Face cache -----------------------------------------------------
    @work(thread=True, exclusive=True, group="cached-models", exit_on_error=False)
    def list_cached_models(self) -> None:
        from studio.hf.cached_models import cached_models

        models = cached_models()
        self.app.call_from_thread(self._show_cached_models, models)

    def _show_cached_models(self, models: list) -> None:
        table = self.query_one("#model-cached", DataTable)
        table.clear()
        for model in models:
            template = "yes" if model.has_template else "no"
            table.add_row(model.name, model.family, format_bytes(model.weights_bytes), template, key=model.name)
        self.query_one("#model-cached-section").display = bool(models)

    @on(DataTable.RowSelected, "#model-cached")
    def _choose_cached_model(self, event: DataTable.RowSelected) -> None:
        self.post_message(CheckpointChosen(event.row_key.value))

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


def checkpoint_table(
    facts: HFFacts, has_template: bool, config: RunConfig, folder: Path, tokenizer_note: str = ""
) -> Table:
    """A Hugging Face checkpoint's facts and what training it by each method needs, per process; the tokenizer's
    line only when it is not the one transformers builds (`tokenizer_note` says why)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    if is_hub_name(config.train.init_from):
        table.add_row("model", f"{config.train.init_from} (Hugging Face cache)")
    table.add_row("folder", str(folder))
    table.add_row("family", f"{facts.model_type} ({facts.architecture})")
    shape = f"{facts.layers} layers, width {facts.hidden}, {facts.heads} heads"
    if facts.kv_heads and facts.kv_heads != facts.heads:
        shape += f" ({facts.kv_heads} key/value)"
    table.add_row("size", shape)
    table.add_row("parameters", format_count(facts.params))
    table.add_row("context", f"{facts.context:,} tokens" if facts.context else "unknown")
    table.add_row("vocabulary", f"{facts.vocab:,}" if facts.vocab else "unknown")
    table.add_row("chat template", "yes" if has_template else "no (chat data gets the studio's default)")
    if tokenizer_note:
        table.add_row("tokenizer", tokenizer_note)
    train = config.train
    table.add_row(
        "train memory", f"batch {train.batch_size} × context {config.model.block_size}, LoRA rank {train.lora_rank}"
    )
    for method in METHODS:
        sizes = method_sizes(config.model, train, facts, method)
        trainable = "all" if method == "full" else format_count(sizes.trainable)
        table.add_row(f"  {method}", f"{format_bytes(sizes.memory['total'])} ({trainable} trainable)")
    return table
