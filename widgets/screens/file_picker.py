"""Pick a file or folder (a corpus, a checkpoint folder): a DirectoryTree in a modal screen. Dismisses with the
chosen path or None."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DirectoryTree, Label

from widgets.key_hints import KeyHints


class FilePickerScreen(ModalScreen[Path | None]):
    DEFAULT_CSS = """
    FilePickerScreen {
        align: center middle;
    }
    #picker {
        width: 90%;
        height: 90%;
        border: round $primary;
        background: $surface;
        padding: 0 1;
    }
    #picker-tree {
        height: 1fr;
    }
    #picker-path {
        color: $text-muted;
    }
    #picker-buttons {
        height: auto;
        align-horizontal: right;
    }
    #picker-buttons Button {
        margin-left: 1;
    }
    """

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("c", "choose", "Choose highlighted"),
        Binding("backspace", "parent", "Parent folder"),
        Binding("question_mark", "app.help", "Help", show=False),  # a modal screen hides the app's own keys
    ]

    def __init__(
        self, start: Path, title: str = "Choose a text file, rows (jsonl, json, csv, tsv, parquet) or a folder"
    ) -> None:
        super().__init__()
        self.start = start
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label(self.title_text, id="picker-title")
            yield DirectoryTree(self.start, id="picker-tree")
            yield Label(str(self.start), id="picker-path")
            with Horizontal(id="picker-buttons"):
                yield Button("Choose", id="picker-choose", variant="primary")
                yield Button("Cancel", id="picker-cancel")
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one(DirectoryTree).focus()

    def highlighted_path(self) -> Path:
        node = self.query_one(DirectoryTree).cursor_node
        return node.data.path if node is not None and node.data is not None else self.start

    @on(DirectoryTree.NodeHighlighted)
    def _show_highlighted(self) -> None:
        self.query_one("#picker-path", Label).update(str(self.highlighted_path()))

    @on(DirectoryTree.FileSelected)
    def _file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.dismiss(event.path)

    @on(Button.Pressed, "#picker-choose")
    def action_choose(self) -> None:
        self.dismiss(self.highlighted_path())

    @on(Button.Pressed, "#picker-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def action_parent(self) -> None:
        tree = self.query_one(DirectoryTree)
        tree.path = Path(tree.path).resolve().parent
