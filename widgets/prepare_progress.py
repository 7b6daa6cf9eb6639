"""Progress of preparing a dataset: the stage's name and a bar, fed from a worker thread."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

STAGES = {"hash": "hashing", "scan": "cleaning", "tokenizer": "tokenizer", "encode": "encoding", "cached": "cached"}
REDRAW_SECONDS = 0.1  # prepare reports every chunk; the bar needs a few updates a second at most


class PrepareProgress(Horizontal):
    """Hidden while nothing is being prepared (an idle bar would only pulse)."""

    DEFAULT_CSS = """
    PrepareProgress {
        height: 1;
        width: 1fr;
    }

    PrepareProgress .progress-stage {
        width: 10;
        margin-left: 1;
    }
    """

    def on_mount(self) -> None:
        self.display = False

    def compose(self) -> ComposeResult:
        yield Label("", classes="progress-stage")
        yield ProgressBar(show_eta=False)

    def reporter(self) -> Callable[[str, int, int], None]:
        """A progress callback for prepare_dataset, to be called from a worker thread; throttled, because
        call_from_thread waits for the event loop each time."""
        last = {"stage": "", "time": 0.0}

        def report(stage: str, done: int, total: int) -> None:
            now = time.monotonic()
            if stage == last["stage"] and done < total and now - last["time"] < REDRAW_SECONDS:
                return
            last.update(stage=stage, time=now)
            self.app.call_from_thread(self.show, stage, done, total)

        return report

    def show(self, stage: str, done: int, total: int) -> None:
        self.display = True
        self.query_one(Label).update(STAGES.get(stage, stage))
        self.query_one(ProgressBar).update(total=max(total, 1), progress=done)

    def clear(self) -> None:
        self.display = False
