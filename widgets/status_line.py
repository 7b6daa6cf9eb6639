"""One line that says what a pane is doing, or why the last thing failed (a StudioError's message)."""

from __future__ import annotations

from textual.widgets import Static


class StatusLine(Static):
    DEFAULT_CSS = """
    StatusLine {
        height: auto;
        max-height: 3;
        color: $text-muted;
    }

    StatusLine.-error {
        color: $text-error;
    }
    """

    def show(self, text: str, failed: bool = False) -> None:
        self.update(text)
        self.set_class(failed, "-error")
