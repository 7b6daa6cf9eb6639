"""One place for what a failed thread worker becomes: one line the user can act on, never a crash.

The studio's thread workers run with `exit_on_error=False` and let their errors propagate. Textual then sends
Worker.StateChanged (ERROR) to the widget that started the worker, and ReportsWorkerErrors, mixed into that
widget, hands `worker_failed` one line: a StudioError's own message (bad input or a bad state, with the fix),
anything else named by its type and the task (a bug, a disk error). By default that line is an error
notification; a pane that shows its state itself (a status line, a button to re-enable) overrides worker_failed.
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState

from studio.errors import StudioError


def failure_line(error: BaseException | None, task: str) -> str:
    if isinstance(error, StudioError):
        return str(error)
    return f"{task} failed: {type(error).__name__}: {error}"


class ReportsWorkerErrors:
    """Mixed into a widget (before its Textual base) whose thread workers may fail."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            worker = event.worker
            self.worker_failed(worker.group, failure_line(worker.error, worker.group.replace("-", " ")))

    def worker_failed(self, group: str, line: str) -> None:
        self.notify(line, severity="error", markup=False)
