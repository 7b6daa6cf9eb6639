"""Tab 1, Data: the corpus and how it is cleaned and tokenized (app.config.data), Prepare, and what came out.

Its Privacy and contamination section sets what `prepare --redact --near-dedup --decontaminate` sets; the facts
then show the redactions per kind with the first ones in context, the near-duplicate pairs and the evaluation rows
matched (widgets.dataset_facts).

A source of rows (parquet, csv, tsv, json, jsonl, a datasets folder) shows its columns and first rows as soon as
it is named, read in a thread worker, with the columns the text and label fields name marked.

Preparing runs in a thread worker (it reads and tokenizes the whole corpus, chat rows with the tokenizer and
template of the model on the Train tab's init_from); the result is shown as the dataset's facts from meta.json and
the first training tokens with their boundaries visible, and for chat data the tokens the loss learns marked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label

from studio.config import DataConfig, RunConfig
from studio.errors import StudioError
from widgets.config_field import ConfigField, form_section
from widgets.dataset_facts import DatasetFacts
from widgets.panes.config_pane import ConfigPane
from widgets.panes.task import TaskPane
from widgets.prepare_progress import PrepareProgress
from widgets.screens.file_picker import FilePickerScreen
from widgets.source_preview import SourcePreview
from widgets.status_line import StatusLine
from widgets.token_sample import TokenPiece, TokenSample, read_token_pieces

if TYPE_CHECKING:
    from studio.data.meta import DatasetMeta
    from studio.data.sources import RowsPreview

BUILTIN_SOURCE = "python-stdlib"
NOT_PREPARED = "Not prepared yet: press p to clean and tokenize the source."


class DataPane(TaskPane, ConfigPane, Horizontal):
    SECTION = "data"
    TASK_BUTTON = "#data-prepare"
    looked_up_for = ""  # the config's dataset_shaping() at the last look-up of the prepared dataset

    BINDINGS = [
        Binding("p", "prepare", "Prepare"),
        Binding("b", "browse", "Browse"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="data-form", classes="form"):
            yield from form_section("Source", "data.source")
            with Horizontal(classes="button-row"):
                yield Button("Built-in corpus", id="data-builtin", compact=True)
                yield Button("Browse…", id="data-browse", compact=True)
            yield ConfigField("data.text_field")
            yield ConfigField("data.glob")
            yield from form_section("Cleaning", "data.min_chars", "data.max_chars", "data.dedup", "data.strict")
            yield from form_section(
                "Privacy and contamination",
                "data.redact",
                "data.redact_numbered",
                "data.near_dedup",
                "data.near_dedup_shingles",
                "data.decontaminate",
                "data.decontaminate_ngram",
            )
            yield from form_section("Tokenizer", "data.tokenizer", "data.vocab_size", "data.val_fraction")
            yield from form_section(
                "Fine-tuning rows", "data.format", "data.supervise_all", "data.overlong", "data.packing"
            )
            yield from form_section("Classification rows", "data.label_field", "data.text_pair_field", "data.val_file")
        with Vertical(id="data-result"):
            with Horizontal(id="data-prepare-row"):
                yield Button("Prepare", id="data-prepare", variant="primary", compact=True)
                yield PrepareProgress(id="data-progress")
            yield StatusLine(NOT_PREPARED, id="data-status")
            with VerticalScroll(id="data-output"):
                yield SourcePreview(id="data-preview")
                yield DatasetFacts(id="data-facts")
                yield Label("", id="data-sample-title", classes="form-section")
                yield TokenSample(id="data-sample")

    # ---- source -----------------------------------------------------------------------------------
    @on(Button.Pressed, "#data-builtin")
    def _use_builtin(self) -> None:
        self.source_field().assign(BUILTIN_SOURCE)

    @on(Button.Pressed, "#data-browse")
    def action_browse(self) -> None:
        self.app.push_screen(FilePickerScreen(browse_start(self.app.config.data.source)), self._picked)

    def _picked(self, path: Path | None) -> None:
        if path is not None:
            self.source_field().assign(str(path))

    def source_field(self) -> ConfigField:
        return next(field for field in self.query(ConfigField) if field.config_key == "data.source")

    # ---- the source's rows ------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.preview(dataclasses.replace(self.app.config.data))
        self.look_up_prepared()

    def config_changed(self, section: str) -> None:
        super().config_changed(section)
        if section == "data":
            self.preview(dataclasses.replace(self.app.config.data))
        if self.app.config.dataset_shaping() != self.looked_up_for:
            self.look_up_prepared()

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def preview(self, data: DataConfig) -> None:
        from studio.data.sources import preview_rows  # imports numpy (studio.data): not at the studio's start

        try:
            found: RowsPreview | str | None = preview_rows(data.source, data)
        except StudioError as error:
            found = str(error)
        self.app.call_from_thread(self._previewed, data, found)

    def _previewed(self, data: DataConfig, found: RowsPreview | str | None) -> None:
        if data != self.app.config.data:  # the options changed meanwhile: a newer preview is on its way
            return
        preview = self.query_one(SourcePreview)
        if isinstance(found, str):
            preview.show_problem(found)
        else:
            preview.show_preview(found, data)

    # ---- whether the source is prepared -----------------------------------------------------------
    def look_up_prepared(self) -> None:
        config = self.app.config.copy()  # a copy: the fields go on editing the app's
        self.looked_up_for = config.dataset_shaping()
        self.look_up(config)

    @work(thread=True, exclusive=True, group="look-up", exit_on_error=False)
    def look_up(self, config: RunConfig) -> None:
        """The prepared dataset of the config as it stands (a studio started again finds what it prepared), so the
        tab never claims another source's dataset is ready."""
        from studio.runs.prepare import prepared_dataset  # imports numpy: in a worker

        try:
            dataset = prepared_dataset(config)
        except StudioError:  # the source cannot be read or the config is invalid: the preview and fields say why
            dataset = None
        found = (dataset.name, dataset.meta, read_token_pieces(dataset)) if dataset else None
        self.app.call_from_thread(self._looked_up, config, found)

    def _looked_up(self, config: RunConfig, found: tuple[str, DatasetMeta, list[TokenPiece]] | None) -> None:
        preparing = self.query_one(self.TASK_BUTTON, Button).disabled
        if preparing or config.dataset_shaping() != self.app.config.dataset_shaping():
            return  # a prepare says how it went; a newer look-up is on its way
        if found is None:
            self.query_one(StatusLine).show(NOT_PREPARED)
            self._show_dataset(None)
        else:
            self.query_one(StatusLine).show(f"dataset {found[0]} is prepared for this source and these options")
            self._show_dataset(found)

    # ---- prepare ----------------------------------------------------------------------------------
    @on(Button.Pressed, "#data-prepare")
    def action_prepare(self) -> None:
        config = self.app.config.copy()
        if self.begin_task(f"preparing {config.data.source}…"):
            self.prepare(config, self.query_one(PrepareProgress).reporter())

    @work(thread=True, exclusive=True, group="prepare", exit_on_error=False)
    def prepare(self, config: RunConfig, progress: Callable[[str, int, int], None]) -> None:
        from studio.runs.prepare import prepare_data  # imports numpy: only once the user prepares

        dataset = prepare_data(config, progress=progress)  # with train.init_from's tokenizer, as a launch would
        pieces = read_token_pieces(dataset)
        self.app.call_from_thread(self._prepared, dataset.name, dataset.meta, pieces)

    def _prepared(self, name: str, meta: DatasetMeta, pieces: list[TokenPiece]) -> None:
        self.end_task(f"dataset {name} is ready; a launch on this source reuses it")
        self._show_dataset((name, meta, pieces))

    def _show_dataset(self, found: tuple[str, DatasetMeta, list[TokenPiece]] | None) -> None:
        """The dataset's facts and first tokens, or nothing (the source is not prepared)."""
        name, meta, pieces = found or ("", None, [])
        self.query_one(DatasetFacts).show_meta(name, meta)
        learned = " (the tokens the loss learns are green)" if meta and meta.examples else ""
        title = f"The first {len(pieces)} training tokens{learned}" if meta else ""
        self.query_one("#data-sample-title", Label).update(title)
        self.query_one(TokenSample).show_pieces(pieces)


def browse_start(source: str) -> Path:
    """Where the file picker opens: the current source's folder when it is a path, else the working folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    return path.resolve().parent if path.is_file() else Path.cwd()
