"""A two-column grid of bold labels and their values, for facts and key lists."""

from __future__ import annotations

from rich.table import Table


def label_table(rows: list[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    return table
