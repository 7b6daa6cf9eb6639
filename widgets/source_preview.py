"""The columns and first rows of a row source (parquet, csv, tsv, json, jsonl, a datasets folder), so the person
picks its text and label fields by sight; the columns the data options name are marked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from studio.formatting import counted

if TYPE_CHECKING:
    from studio.config import DataConfig
    from studio.data.sources import RowsPreview

CELL_CHARS = 40  # of one value shown; longer ones end with …


class SourcePreview(Static):
    DEFAULT_CSS = """
    SourcePreview {
        height: auto;
        margin-top: 1;
        display: none;
    }

    SourcePreview.-shown {
        display: block;
    }

    SourcePreview.-error {
        color: $text-error;
    }
    """

    def show_preview(self, preview: RowsPreview | None, data: DataConfig) -> None:
        """The preview's table, or nothing for a source without rows (plain text, a folder, the built-in corpus)."""
        self.set_class(preview is not None, "-shown")
        self.remove_class("-error")
        self.update(preview_table(preview, data) if preview else "")

    def show_problem(self, line: str) -> None:
        """Why the source's rows cannot be read (a StudioError's line)."""
        self.add_class("-shown", "-error")
        self.update(line)


def preview_table(preview: RowsPreview, data: DataConfig) -> Group:
    """A title line, the rows under their columns' names, and what the green columns mean."""
    roles = {data.text_field: "text", data.label_field: "label", data.text_pair_field: "pair"}
    table = Table(expand=False)
    for column in preview.columns:
        role = roles.get(column)
        header = Text(column + (f" ({role})" if role else ""), style="bold green" if role else "bold")
        table.add_column(header, no_wrap=True, max_width=CELL_CHARS + 2)
    for row in preview.rows:
        table.add_row(*(cell_text(row.get(column)) for column in preview.columns))
    shown = f"{counted(len(preview.columns), 'column')}, the first {counted(len(preview.rows), 'row')}"
    title = Text(f"{preview.file}: {shown}", style="bold")
    return Group(title, table, Text("green: the columns the text, label and pair fields name", style="dim"))


def cell_text(value: Any) -> str:
    """A value on one line, cut to CELL_CHARS: line breaks as ↵, null as `null`."""
    text = "null" if value is None else str(value).replace("\n", "↵")
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
