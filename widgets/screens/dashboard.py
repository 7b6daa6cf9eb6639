"""One run, live: progress, losses, learning rate and throughput, samples, a classifier's confusion matrix, the
log tail, the machine.

A timer asks a thread worker to poll the run folder (RunWatcher reads only new bytes); when something changed the
worker hands a copy (RunView) to the UI, and the widgets redraw. The run is a detached process group: leaving
this screen or quitting the studio never touches it, and opening it again reads its whole history.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from studio.run_folder.watch import RunView, RunWatcher
from studio.runs.control import request_checkpoint, stop_run
from widgets.confusion_view import ConfusionView
from widgets.hardware_panel import HardwarePanel
from widgets.key_hints import KeyHints
from widgets.log_tail import LogTail
from widgets.loss_chart import LossChart, loss_curves
from widgets.run_header import RunHeader
from widgets.samples_view import SamplesView
from widgets.screens.chart_screen import ChartScreen
from widgets.worker_errors import ReportsWorkerErrors

POLL_SECONDS = 0.5


class DashboardScreen(ReportsWorkerErrors, ChartScreen):
    CHART = "#loss-chart"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "stop", "Stop"),
        Binding("c", "checkpoint", "Checkpoint"),
        *ChartScreen.CHART_KEYS,
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.watcher = RunWatcher(self.run_dir)
        self.view: RunView | None = None  # the latest shown (tests read it)

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield Static("", id="run-error")
        with Horizontal(id="dashboard-top"):
            yield LossChart("loss (train ─ / val •)", id="loss-chart")
            yield HardwarePanel(self.run_dir, id="hardware")
        with Horizontal(id="dashboard-bottom"):
            yield SamplesView(id="samples")
            yield ConfusionView(id="confusion")
            yield LogTail(id="log-tail")
        yield KeyHints()

    def on_mount(self) -> None:
        self.query_one("#run-error").display = False
        self.poll_run()
        self.set_interval(POLL_SECONDS, self.poll_run)

    @work(thread=True, exclusive=True, group="poll-run", exit_on_error=False)
    def poll_run(self) -> None:
        if self.run_deleted():
            self.app.call_from_thread(self.close_deleted_run)
            return
        if self.watcher.poll() or self.view is None:
            view = self.watcher.view()
            self.app.call_from_thread(self.show_run, view)

    def show_run(self, view: RunView) -> None:
        self.view = view
        self.query_one(RunHeader).show(view)
        self.query_one("#loss-chart", LossChart).show_curves(loss_curves(view))
        self.query_one(HardwarePanel).show_run_memory(view)
        self.query_one(SamplesView).show(view.samples)
        self.query_one(ConfusionView).show(view.confusion)
        self.query_one(LogTail).show(view.log_lines)
        self._show_failure(view)

    def _show_failure(self, view: RunView) -> None:
        """A failed or crashed run leads with what went wrong and the log, not with a frozen chart."""
        failed = view.status in ("failed", "crashed")
        self.set_class(failed, "-failed")
        banner = self.query_one("#run-error", Static)
        banner.display = failed
        if failed:
            reason = view.error or "the trainer stopped without a word: see trainer.log below"
            banner.update(f"{view.status}: {reason}")

    # ---- a run deleted behind the studio's back ---------------------------------------------------------
    def run_deleted(self) -> bool:
        """Whether the run's folder is gone (`rm -r` from a shell while the dashboard is open): nothing is left
        to show or to act on."""
        return not self.run_dir.is_dir()

    def close_deleted_run(self) -> None:
        """Back to the runs list with a note; once only (a poll and a key may both find the folder gone), and
        not from under another screen (the next poll closes it once that one is gone)."""
        if not self.is_current:
            return
        self.app.pop_screen()
        self.app.action_show_tab("runs")
        message = f"run {self.run_dir.name} no longer exists (its folder was removed); back to the runs"
        self.app.notify(message, severity="warning", markup=False)

    # ---- actions -------------------------------------------------------------------------------------
    def action_checkpoint(self) -> None:
        if self.run_deleted():
            self.close_deleted_run()
            return
        request_checkpoint(self.run_dir)
        self.notify("checkpoint requested: the trainer saves one after its current step")

    def action_stop(self) -> None:
        if self.run_deleted():
            self.close_deleted_run()
            return
        self.notify("stopping: the trainer saves a checkpoint, then every process exits")
        self.stop_training()

    @work(thread=True, exclusive=True, group="stop", exit_on_error=False)
    def stop_training(self) -> None:
        status = stop_run(self.run_dir)
        self.app.call_from_thread(self.notify, f"run {self.run_dir.name}: {status}")
