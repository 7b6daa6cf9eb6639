"""A classifier's confusion matrix at its latest evaluation: true labels down, predicted labels across."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static


class ConfusionView(Static):
    DEFAULT_CSS = """
    ConfusionView {
        display: none;  /* until a classifier's evaluation carries a matrix */
        width: auto;
        max-width: 60;
        height: 1fr;
        padding: 0 1;
    }
    """

    def show(self, confusion: tuple[int, list, list[list[int]]] | None) -> None:
        """Shown only for a classifier (a run whose evaluations carry a confusion matrix)."""
        self.display = confusion is not None
        if confusion is not None:
            self.update(confusion_table(*confusion))


def confusion_table(step: int, labels: list, matrix: list[list[int]]) -> Table:
    """Counts per (true, predicted) pair; the diagonal, the right answers, in bold."""
    table = Table(title=f"confusion @{step} (true ↓ predicted →)", title_style="bold", box=None, padding=(0, 1))
    table.add_column("")
    for label in labels:
        table.add_column(str(label)[:12], justify="right")
    for row_index, (label, row) in enumerate(zip(labels, matrix)):
        cells = [f"[bold]{count}[/]" if column == row_index else str(count) for column, count in enumerate(row)]
        table.add_row(str(label)[:12], *cells)
    return table
