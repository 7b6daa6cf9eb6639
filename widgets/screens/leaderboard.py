"""The leaderboard (`l` on the Runs tab): every run and export judged on a task, one row each, what `llm-studio
leaderboard` prints (studio.reports.leaderboard, read by a worker); tasks in turn, within each the order `s` picks
(score, best first; target; step; newest), `enter` opens a run's dashboard. `r` switches to the checkpoints'
ratings from the playground's judged pairs, what `llm-studio leaderboard --ratings` prints (studio.reports.ratings),
sorted by rating, games or name."""

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
from studio.reports import ratings as rated
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
RATING_SORTS = {  # the same for the ratings (`r`)
    "rating": lambda rating: -rating.rating,
    "games": lambda rating: -(rating.wins + rating.losses),
    "checkpoint": lambda rating: rating.player,
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
        Binding("r", "switch", "Ratings / tasks"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, list[Standing]] = {}
        self.ratings: list[rated.Rating] = []
        self.pairs = 0  # the judged pairs the ratings are fitted to
        self.showing_ratings = False
        self.sorts = {"tasks": "score", "ratings": "rating"}  # each view's order
        self.shown: list[Standing | rated.Rating] = []  # the table's rows, in order

    def compose(self) -> ComposeResult:
        yield Static("leaderboard", id="leaderboard-title")
        yield DataTable(id="leaderboard-table", cursor_type="row", zebra_stripes=True)
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()  # the app focuses nothing by itself (AUTO_FOCUS)
        self.read_leaderboard()

    @work(thread=True, exclusive=True, group="leaderboard", exit_on_error=False)
    def read_leaderboard(self) -> None:
        tasks, pairs = leaderboard(), rated.preference_pairs()
        found = rated.ratings(pairs) if pairs else []
        self.app.call_from_thread(self.show_leaderboard, tasks, found, len(pairs))

    def show_leaderboard(self, tasks: dict[str, list[Standing]], ratings: list[rated.Rating], pairs: int) -> None:
        self.tasks, self.ratings, self.pairs = tasks, ratings, pairs
        self.show_rows()

    @property
    def view(self) -> str:
        return "ratings" if self.showing_ratings else "tasks"

    def action_sort(self) -> None:
        names = list(RATING_SORTS if self.showing_ratings else SORTS)
        self.sorts[self.view] = names[(names.index(self.sorts[self.view]) + 1) % len(names)]
        self.show_rows()

    def action_switch(self) -> None:
        self.showing_ratings = not self.showing_ratings
        self.show_rows()

    def show_rows(self) -> None:
        """The table rebuilt whole in the chosen order: a leaderboard is a few dozen rows."""
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self.shown = []
        if self.showing_ratings:
            self.show_ratings(table)
        else:
            self.show_tasks(table)

    def show_tasks(self, table: DataTable) -> None:
        title = self.query_one("#leaderboard-title", Static)
        if not self.tasks:
            title.update(f"no task results yet; get some with {escape(HOW_TO_GET_RESULTS)}")
        else:
            rows = sum(len(standings) for standings in self.tasks.values())
            sort = self.sorts["tasks"]
            title.update(f"leaderboard: {counted(len(self.tasks), 'task')}, {counted(rows, 'result')} · by {sort}")
        table.add_columns("task", "#", *COLUMNS)
        now = clock()
        for label, standings in self.tasks.items():
            ranks = {id(standing): rank for rank, standing in enumerate(standings, start=1)}  # by score, in any order
            for standing in sorted(standings, key=SORTS[self.sorts["tasks"]]):
                cells = standing_cells(standing, now)
                table.add_row(escape(label), str(ranks[id(standing)]), *(escape(cell) for cell in cells))
                self.shown.append(standing)

    def show_ratings(self, table: DataTable) -> None:
        title = self.query_one("#leaderboard-title", Static)
        if not self.ratings:
            title.update(escape(rated.NO_PREFERENCES))
        else:
            title.update(f"ratings of {counted(len(self.ratings), 'checkpoint')}: {rated.ratings_note(self.pairs)} · "
                         f"by {self.sorts['ratings']}")  # fmt: skip
        table.add_columns("#", *rated.COLUMNS)
        ranks = {id(rating): rank for rank, rating in enumerate(self.ratings, start=1)}  # by rating, in any order
        for rating in sorted(self.ratings, key=RATING_SORTS[self.sorts["ratings"]]):
            table.add_row(str(ranks[id(rating)]), *(escape(cell) for cell in rated.rating_cells(rating)))
            self.shown.append(rating)

    @on(DataTable.RowSelected, "#leaderboard-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        row = self.shown[event.cursor_row]
        target = row.run if isinstance(row, rated.Rating) else row.target
        if is_name(target) and run_path(target).is_dir():
            self.post_message(OpenRun(run_path(target)))
        else:
            self.notify(f"{target} is not a run (a folder, or a deleted run): it has no dashboard", severity="warning")
