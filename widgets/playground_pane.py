"""PLACEHOLDER: replaced by the helper that owns this pane."""

from textual.widgets import Static


class PlaygroundPane(Static):
    def __init__(self) -> None:
        super().__init__("PlaygroundPane")
