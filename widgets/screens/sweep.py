"""A sweep's results: its runs in one table, best final validation loss first, with the values each was given;
`v` overlays all their curves in the compare view, `enter` opens a run's dashboard. Refreshed while shown."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from studio.formatting import counted, format_loss
from studio.queue.sweep import Sweep, SweepRun, read_sweep, sweep_results
from studio.run_folder.status import RunInfo
from widgets.key_hints import KeyHints
from widgets.messages import OpenRun
from widgets.run_header import STATUS_STYLES
from widgets.screens.compare import CompareScreen
from widgets.worker_errors import ReportsWorkerErrors

REFRESH_SECONDS = 2.0


class SweepScreen(ReportsWorkerErrors, Screen):
    DEFAULT_CSS = """
    SweepScreen #sweep-title {
        height: auto;
        padding: 0 1;
        text-style: bold;
    }
    SweepScreen #sweep-table {
        height: 1fr;
    }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("v", "compare", "Compare all"),
    ]

    def __init__(self, name: str):
        super().__init__()
        self.sweep_name = name
        self.results: list[tuple[SweepRun, RunInfo]] = []

    def compose(self) -> ComposeResult:
        yield Static(f"sweep {self.sweep_name}", id="sweep-title")
        yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()  # the app focuses nothing by itself (AUTO_FOCUS)
        self.read_results()
        self.set_interval(REFRESH_SECONDS, self.read_results)

    @work(thread=True, exclusive=True, group="sweep", exit_on_error=False)
    def read_results(self) -> None:
        sweep = read_sweep(self.sweep_name)
        self.app.call_from_thread(self.show_results, sweep, sweep_results(sweep))

    def show_results(self, sweep: Sweep, results: list[tuple[SweepRun, RunInfo]]) -> None:
        """Rebuilt whole: a sweep is a handful of runs, and its order changes as their losses do."""
        self.results = results
        finished = sum(run.status == "finished" for _, run in results)
        self.query_one("#sweep-title", Static).update(
            f"sweep {escape(sweep.name)}: {counted(len(results), 'run')}, {finished} finished · "
            "best final val loss first"
        )
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear(columns=True)
        scores = any(run.val_scores for _, run in results)  # a classifier's accuracy and F1
        table.add_columns("#", "name", *sweep.keys, "status", "step", "val loss", "train loss")
        if scores:
            table.add_column("val scores")
        for rank, (member, run) in enumerate(results, start=1):
            table.add_row(
                str(rank),
                escape(run.name),
                *(escape(member.values.get(key, "-")) for key in sweep.keys),
                Text(run.status, style=STATUS_STYLES.get(run.status, ""), end=""),
                f"{run.step}/{run.max_steps}",
                format_loss(run.val_loss),
                format_loss(run.train_loss),
                *([run.val_scores or "-"] if scores else []),
                key=run.name,
            )
        table.move_cursor(row=min(row, max(table.row_count - 1, 0)))

    @on(DataTable.RowSelected, "#sweep-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        run = next(run for _, run in self.results if run.name == event.row_key.value)
        self.post_message(OpenRun(run.path))

    def action_compare(self) -> None:
        runs = [run.path for _, run in self.results if run.status not in ("damaged", "queued", "created")]
        if not runs:
            self.notify("no run of this sweep has started yet", severity="warning")
            return
        self.app.push_screen(CompareScreen(runs))
