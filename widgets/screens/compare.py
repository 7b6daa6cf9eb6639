"""Several runs' loss curves over one another: train as lines, validation as points, one colour per run."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from studio.run_folder.watch import RunView, RunWatcher
from widgets.key_hints import KeyHints
from widgets.loss_chart import LossChart, loss_curves
from widgets.screens.chart_screen import ChartScreen
from widgets.worker_errors import ReportsWorkerErrors

RUN_COLORS = ("cyan", "orange", "green", "magenta", "yellow", "red", "blue", "white")


class CompareScreen(ReportsWorkerErrors, ChartScreen):
    DEFAULT_CSS = """
    CompareScreen #compare-chart {
        height: 1fr;
    }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), *ChartScreen.CHART_KEYS]

    def __init__(self, run_dirs: list[Path]):
        super().__init__()
        self.run_dirs = [Path(path) for path in run_dirs]

    def compose(self) -> ComposeResult:
        yield Static(
            f"comparing {len(self.run_dirs)} runs: " + ", ".join(p.name for p in self.run_dirs), id="compare-title"
        )
        yield LossChart("loss (train ─ / val •)", id="compare-chart")
        yield KeyHints()

    def on_mount(self) -> None:
        self.read_runs()

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def read_runs(self) -> None:
        views = []
        for run_dir in self.run_dirs:
            watcher = RunWatcher(run_dir)
            watcher.poll()
            views.append(watcher.view())
        self.app.call_from_thread(self.show_runs, views)

    def show_runs(self, views: list[RunView]) -> None:
        curves = []
        for index, view in enumerate(views):
            color = RUN_COLORS[index % len(RUN_COLORS)]
            curves += loss_curves(view, label_prefix=f"{view.name} ", train_color=color, val_color=color)
        self.query_one(LossChart).show_curves(curves)
