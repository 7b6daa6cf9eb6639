"""One line that says what a pane is doing, or why the last thing failed (a StudioError's message)."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    def show(self, text: str, failed: bool = False) -> None:
        self.update(text)
        self.set_class(failed, "-error")
