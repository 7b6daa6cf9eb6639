"""What a pane with one long task started by a button (Data's Prepare, Train's Launch) does around it."""

from __future__ import annotations

from textual.widgets import Button

from widgets.prepare_progress import PrepareProgress
from widgets.status_line import StatusLine
from widgets.worker_errors import ReportsWorkerErrors


class TaskPane(ReportsWorkerErrors):
    """Mixed into the pane (before its Textual base). While the task runs its button is disabled and the pane's
    PrepareProgress shows the stages; the outcome, or the failure of the task's worker, goes to its StatusLine."""

    TASK_BUTTON = ""  # the selector of the button that starts the task

    def begin_task(self, text: str) -> bool:
        """Start showing a task; False (and nothing shown) when one is already running."""
        button = self.query_one(self.TASK_BUTTON, Button)
        if button.disabled:
            return False
        button.disabled = True
        self.query_one(StatusLine).show(text)
        return True

    def end_task(self, text: str, failed: bool = False) -> None:
        self.query_one(self.TASK_BUTTON, Button).disabled = False
        self.query_one(PrepareProgress).clear()
        self.query_one(StatusLine).show(text, failed=failed)

    def worker_failed(self, group: str, line: str) -> None:
        self.end_task(line, failed=True)
