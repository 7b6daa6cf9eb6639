"""Asks where to export a run (Hugging Face layout); dismisses with the folder, or None when cancelled."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from widgets.screens.dialog import Dialog


class ExportDialog(Dialog[str | None]):
    AUTO_FOCUS = "#export-folder"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_name: str, default_folder: str):
        super().__init__()
        self.run_name = run_name
        self.default_folder = default_folder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Export run {self.run_name} (Hugging Face layout) to the folder:")
            yield Input(self.default_folder, id="export-folder")
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Export (enter)", id="export", variant="primary")

    @on(Input.Submitted)
    @on(Button.Pressed, "#export")
    def submit(self) -> None:
        folder = self.query_one("#export-folder", Input).value.strip()
        if folder:
            self.dismiss(folder)
        else:
            self.notify("name a folder to export to", severity="warning")

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
