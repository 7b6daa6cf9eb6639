"""Tab 4: every run and the run queue, refreshed in the background (a queue whose runner died gets a new one, with
a note); open, compare, resume, stop, delete and export runs; open the sweep a run belongs to, and the leaderboard.

Every slow thing (reading the run folders, stopping, resuming, deleting, exporting) runs in a thread worker and
reports back with call_from_thread; a failure is one line (widgets.worker_errors), never a crash.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from studio.formatting import counted
from studio.paths import child_process_env, studio_home
from studio.queue.entries import Entry, QueueState, mark_queued, queue_state, remove_run, restart_stalled_runner
from studio.queue.sweep import sweep_of
from studio.run_folder.status import RunInfo, list_runs
from studio.runs.control import launch, stop_run
from studio.runs.prepare import prepare_resume
from widgets.messages import OpenRun, RunLaunched
from widgets.run_table import RunTable
from widgets.screens.compare import CompareScreen
from widgets.screens.confirm import ConfirmScreen
from widgets.screens.export_dialog import ExportChoice, ExportDialog
from widgets.screens.leaderboard import LeaderboardScreen
from widgets.screens.sweep import SweepScreen
from widgets.worker_errors import ReportsWorkerErrors

REFRESH_SECONDS = 2.0
clock = time.time  # the runs' ages are measured against this; snapshot tests fix it


class RunsPane(ReportsWorkerErrors, Vertical):
    DEFAULT_CSS = """
    RunsPane {
        height: 1fr;
    }
    RunsPane #runs-table {
        height: 1fr;
    }
    RunsPane #runs-hint {
        height: 1;
        color: $text-muted;
    }
    RunsPane #queue-line {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    """
    BINDINGS = [
        Binding("v", "compare", "Compare marked"),
        Binding("r", "resume", "Resume"),
        Binding("s", "stop", "Stop"),
        Binding("d", "delete", "Delete"),
        Binding("e", "export", "Export"),
        Binding("w", "sweep", "Sweep"),
        Binding("l", "leaderboard", "Leaderboard"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="queue-line", markup=False)
        yield RunTable(id="runs-table")
        yield Static("", id="runs-hint")

    def on_mount(self) -> None:
        self.refresh_runs()
        self.set_interval(REFRESH_SECONDS, self._refresh_if_shown)

    def on_show(self) -> None:
        self.query_one(RunTable).focus()
        self.refresh_runs()

    def _refresh_if_shown(self) -> None:
        if self.is_on_screen:
            self.refresh_runs()

    @work(thread=True, exclusive=True, group="list-runs", exit_on_error=False)
    def refresh_runs(self) -> None:
        if restarted := restart_stalled_runner():  # the queue goes on when the studio looks at it
            self.tell(restarted, "warning")
        runs = mark_queued(list_runs())
        self.app.call_from_thread(self._show_runs, runs, queue_state())

    def _show_runs(self, runs: list[RunInfo], queue: QueueState) -> None:
        line = self.query_one("#queue-line", Static)
        line.display = not queue.empty  # no line at all for someone who never queues
        line.update(queue_line(queue))
        table = self.query_one(RunTable)
        table.show_runs(runs, clock())
        hint = (
            "no runs yet: set one up in 1-3 and launch it, or `llm-studio train --detach`"
            if not runs
            else f"{counted(len(runs), 'run')} · enter opens a run · space marks runs, v compares them"
        )
        self.query_one("#runs-hint", Static).update(hint)

    def tell(self, message: str, severity: str = "information") -> None:
        """One line from a worker thread; plain text, since paths and CLI output may hold [brackets]."""
        self.app.call_from_thread(self.notify, message, severity=severity, markup=False)

    # ---- opening ---------------------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#runs-table")
    def open_run(self, event: DataTable.RowSelected) -> None:
        run = self.query_one(RunTable).runs[event.row_key.value]
        if run.status == "damaged":
            self.notify(f"run {run.name} is damaged: {run.error}", severity="error", markup=False)
        else:
            self.post_message(OpenRun(run.path))

    def action_compare(self) -> None:
        table = self.query_one(RunTable)
        marked = [run.path for name, run in table.runs.items() if name in table.marked and run.status != "damaged"]
        if len(marked) < 2:
            self.notify("mark two runs or more with space, then press v", severity="warning")
            return
        self.app.push_screen(CompareScreen(marked))

    def _current(self) -> RunInfo | None:
        run = self.query_one(RunTable).current_run()
        if run is None:
            self.notify("no run selected", severity="warning")
        return run

    def action_sweep(self) -> None:
        if run := self._current():
            self.open_sweep(run.name)

    @work(thread=True, exclusive=True, group="sweep-of", exit_on_error=False)
    def open_sweep(self, run: str) -> None:
        sweep = sweep_of(run)
        if sweep is None:
            self.tell(f"run {run} belongs to no sweep; `llm-studio sweep NAME --grid ...` queues one", "warning")
        else:
            self.app.call_from_thread(self.app.push_screen, SweepScreen(sweep.name))

    def action_leaderboard(self) -> None:
        self.app.push_screen(LeaderboardScreen())

    # ---- resume / stop / delete ------------------------------------------------------------------------
    def action_resume(self) -> None:
        if run := self._current():
            self.control_run(partial(self._resume, run.path))

    def _resume(self, run_dir: Path) -> str:
        _, checkpoint, note = prepare_resume(run_dir.name, None)
        launch(run_dir, checkpoint)
        if note:
            self.tell(f"note: {note}", "warning")
        self.app.call_from_thread(self.post_message, RunLaunched(run_dir))
        return f"run {run_dir.name} resumed"

    def action_stop(self) -> None:
        if run := self._current():
            self.notify(f"stopping {run.name}: a checkpoint, then every process exits")
            self.control_run(lambda: f"run {run.name}: {stop_run(run.path)}")

    def action_delete(self) -> None:
        if run := self._current():
            question = f"Delete run {run.name} and all its checkpoints? This cannot be undone."
            self.app.push_screen(
                ConfirmScreen(question, confirm="Delete"),
                lambda confirmed: confirmed and self.control_run(partial(self._delete, run.path)),
            )

    @staticmethod
    def _delete(run_dir: Path) -> str:
        stages = remove_run(run_dir.name)
        cancelled = f"; cancelled the stages after it: {', '.join(stages)}" if stages else ""
        return f"deleted run {run_dir.name}{cancelled}"

    @work(thread=True, group="run-control", exit_on_error=False)
    def control_run(self, act: Callable[[], str]) -> None:
        """Resume, stop or delete off the event loop; its outcome as one line, then a fresh table."""
        outcome = act()
        self.tell(outcome)
        self.refresh_runs()

    # ---- export ----------------------------------------------------------------------------------------
    def action_export(self) -> None:
        if run := self._current():
            default = studio_home() / "exports" / run.name
            self.app.push_screen(
                ExportDialog(run.name, str(default)), lambda choice: choice and self.export(run.name, choice)
            )

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export(self, name: str, choice: ExportChoice) -> None:
        """`llm-studio export` in a subprocess: it loads torch (and llama.cpp), which the studio's process never
        does."""
        self.tell(f"exporting {name} to {choice.folder}…")
        done = subprocess.run(
            [sys.executable, "-m", "studio.cli", "export", name, *choice.cli_args()],
            capture_output=True,
            text=True,
            env=child_process_env(),
            stdin=subprocess.DEVNULL,
        )
        output = (done.stderr if done.returncode else done.stdout) or done.stdout + done.stderr
        lines = [line for line in output.splitlines() if line.strip()]
        last = lines[-1] if lines else f"export exited with code {done.returncode}"
        self.tell(last, "information" if done.returncode == 0 else "error")


def queue_line(queue: QueueState) -> str:
    """The queue in one line: what trains, what waits (first in line first), whether it is held."""
    parts = [f"training {queue.current}"] if queue.current else []
    if queue.waiting:
        parts.append(f"{len(queue.waiting)} waiting: " + ", ".join(map(waiting_text, queue.waiting)))
    if queue.paused:
        parts.append("paused (`llm-studio queue resume`)")
    return "queue · " + " · ".join(parts)


def waiting_text(entry: Entry) -> str:
    """A waiting run, and for a stage the run it waits for."""
    return f"{entry.run} (after {entry.after})" if entry.after else entry.run
