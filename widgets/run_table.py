"""The table of every run: one row per run folder, keyed by the run's name; `space` marks rows for comparison."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from studio.formatting import format_age, format_loss
from studio.run_folder.status import RunInfo
from widgets.run_header import STATUS_STYLES

COLUMNS = (
    "",
    "name",
    "status",
    "step",
    "train loss",
    "val loss",
    "age",
    "preset",
    "data",
)  # what fits 80 columns first
SCORES = "val scores"  # a classifier's accuracy and F1: a column added once a listed run has them
MARK = "●"


class RunTable(DataTable):
    BINDINGS = [Binding("space", "toggle_mark", "Mark")]

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.runs: dict[str, RunInfo] = {}
        self.marked: set[str] = set()

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def row_cells(self, run: RunInfo, now: float) -> tuple:
        return (
            MARK if run.name in self.marked else " ",
            run.name,
            Text(run.status_line, style=STATUS_STYLES.get(run.status, ""), end=""),
            f"{run.step}/{run.max_steps}",
            format_loss(run.train_loss),
            format_loss(run.val_loss),
            format_age(now - run.created),
            escape(run.preset),
            escape(run.data),
            *([run.val_scores] if len(self.columns) > len(COLUMNS) else []),
        )  # str cells are read as markup

    def show_runs(self, runs: list[RunInfo], now: float) -> None:
        """Update in place when the same runs are listed (the cursor stays put); rebuild when runs came or went."""
        names = [run.name for run in runs]
        self.marked &= set(names)
        if len(self.columns) == len(COLUMNS) and any(run.val_scores for run in runs):
            self.add_column(SCORES, default="")
        if names == list(self.runs):
            for run in runs:
                for column, value in zip(self.columns, self.row_cells(run, now)):
                    if self.get_cell(run.name, column) != value:  # each update repaints the table
                        self.update_cell(run.name, column, value)
        else:
            current = self.current_name()
            self.clear()
            for run in runs:
                self.add_row(*self.row_cells(run, now), key=run.name)
            if current in names:
                self.move_cursor(row=names.index(current))
        self.runs = {run.name: run for run in runs}

    def current_name(self) -> str | None:
        if not self.runs or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value

    def current_run(self) -> RunInfo | None:
        name = self.current_name()
        return self.runs.get(name) if name else None

    def action_toggle_mark(self) -> None:
        name = self.current_name()
        if name is None:
            return
        self.marked ^= {name}
        self.update_cell(name, self.ordered_columns[0].key, MARK if name in self.marked else " ")
