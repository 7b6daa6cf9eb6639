"""Asks how to export a run: the folder, the format (a Hugging Face folder, or a GGUF file for llama.cpp and Ollama)
and a GGUF's quantisation; dismisses with an `ExportChoice`, or None when cancelled."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select

from studio.export import FORMATS, GGUF_QUANTS
from widgets.screens.dialog import Dialog

FORMAT_LABELS = {"huggingface": "Hugging Face folder", "gguf": "GGUF (llama.cpp, Ollama)"}


@dataclass(frozen=True)
class ExportChoice:
    folder: str
    format: str  # one of studio.export.FORMATS
    quant: str  # a GGUF's, one of studio.export.GGUF_QUANTS

    def cli_args(self) -> list[str]:
        """What `llm-studio export RUN` takes for it."""
        gguf = ["--format", "gguf", "--quant", self.quant] if self.format == "gguf" else []
        return ["--out", self.folder, *gguf]


class ExportDialog(Dialog[ExportChoice | None]):
    AUTO_FOCUS = "#export-folder"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_name: str, default_folder: str):
        super().__init__()
        self.run_name = run_name
        self.default_folder = default_folder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Export run {self.run_name} to the folder:")
            yield Input(self.default_folder, id="export-folder")
            yield Select(
                [(FORMAT_LABELS[name], name) for name in FORMATS],
                value=FORMATS[0],
                allow_blank=False,
                id="export-format",
            )
            yield Select(
                [(f"GGUF weights: {quant}", quant) for quant in GGUF_QUANTS],
                value=GGUF_QUANTS[0],
                allow_blank=False,
                disabled=True,
                id="export-quant",
            )
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Export (enter)", id="export", variant="primary")

    @on(Select.Changed, "#export-format")
    def format_changed(self, changed: Select.Changed) -> None:
        self.query_one("#export-quant", Select).disabled = changed.value != "gguf"

    @on(Input.Submitted)
    @on(Button.Pressed, "#export")
    def submit(self) -> None:
        folder = self.query_one("#export-folder", Input).value.strip()
        if folder:
            export_format = str(self.query_one("#export-format", Select).value)
            self.dismiss(ExportChoice(folder, export_format, str(self.query_one("#export-quant", Select).value)))
        else:
            self.notify("name a folder to export to", severity="warning")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
