"""The leaderboard (`l` on the Runs tab): every run and export judged on a task, one row each, what `llm-studio
leaderboard` prints (studio.reports.leaderboard, read by a worker); tasks in turn, within each the order `s` picks
(score, best first; target; step; newest), `enter` opens a run's dashboard."""

from __future__ import annotations

import time

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from studio.formatting import counted
from studio.paths import is_name
from studio.reports.leaderboard import COLUMNS, HOW_TO_GET_RESULTS, Standing, leaderboard, standing_cells
from studio.run_folder.layout import run_path
from widgets.key_hints import KeyHints
from widgets.messages import OpenRun
from widgets.worker_errors import ReportsWorkerErrors

clock = time.time  # results' ages are measured against this; snapshot tests fix it
SORTS = {  # what `s` steps through: a name, and the order within a task
    "score": lambda standing: -standing.score,
    "target": lambda standing: standing.target,
    "step": lambda standing: -(standing.step or 0),
    "newest": lambda standing: -(standing.t or 0),
}


class LeaderboardScreen(ReportsWorkerErrors, Screen):
    DEFAULT_CSS = """
    LeaderboardScreen #leaderboard-title {
        height: auto;
        padding: 0 1;
        text-style: bold;
    }
    LeaderboardScreen #leaderboard-table {
        height: 1fr;
    }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "sort", "Sort"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, list[Standing]] = {}
        self.sort = "score"
        self.shown: list[Standing] = []  # the table's rows, in order

    def compose(self) -> ComposeResult:
        yield Static("leaderboard", id="leaderboard-title")
        yield DataTable(id="leaderboard-table", cursor_type="row", zebra_stripes=True)
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()  # the app focuses nothing by itself (AUTO_FOCUS)
        self.read_leaderboard()

    @work(thread=True, exclusive=True, group="leaderboard", exit_on_error=False)
    def read_leaderboard(self) -> None:
        tasks = leaderboard()
        self.app.call_from_thread(self.show_leaderboard, tasks)

    def show_leaderboard(self, tasks: dict[str, list[Standing]]) -> None:
        self.tasks = tasks
        self.show_rows()

    def action_sort(self) -> None:
        names = list(SORTS)
        self.sort = names[(names.index(self.sort) + 1) % len(names)]
        self.show_rows()

    def show_rows(self) -> None:
        """The table rebuilt whole in the chosen order: a leaderboard is a few dozen rows."""
        title = self.query_one("#leaderboard-title", Static)
        if not self.tasks:
            title.update(f"no task results yet; get some with {escape(HOW_TO_GET_RESULTS)}")
        else:
            rows = sum(len(standings) for standings in self.tasks.values())
            title.update(f"leaderboard: {counted(len(self.tasks), 'task')}, {counted(rows, 'result')} · by {self.sort}")
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_columns("task", "#", *COLUMNS)
        now = clock()
        self.shown = []
        for label, standings in self.tasks.items():
            ranks = {id(standing): rank for rank, standing in enumerate(standings, start=1)}  # by score, in any order
            for standing in sorted(standings, key=SORTS[self.sort]):
                cells = standing_cells(standing, now)
                table.add_row(escape(label), str(ranks[id(standing)]), *(escape(cell) for cell in cells))
                self.shown.append(standing)

    @on(DataTable.RowSelected, "#leaderboard-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        target = self.shown[event.cursor_row].target
        if is_name(target) and run_path(target).is_dir():
            self.post_message(OpenRun(run_path(target)))
        else:
            self.notify(f"{target} is not a run (a folder, or a deleted run): it has no dashboard", severity="warning")
