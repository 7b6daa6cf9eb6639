"""The last lines of a run's trainer.log (RunWatcher reads only the new bytes; this only shows them)."""

from __future__ import annotations

from textual.widgets import Log


class LogTail(Log):
    def __init__(self, max_lines: int = 200, *, id: str | None = None):
        super().__init__(max_lines=max_lines, auto_scroll=True, id=id)
        self.border_title = "trainer.log"
        self.shown: list[str] = []

    def show(self, lines: list[str]) -> None:
        """Append what is new since the last call; rewrite only when the tail no longer continues the shown one."""
        if lines == self.shown:
            return
        overlap = _overlap(self.shown, lines)
        if overlap:
            self.write_lines(lines[overlap:])
        else:
            self.clear()
            self.write_lines(lines)
        self.shown = list(lines)


def _overlap(shown: list[str], lines: list[str]) -> int:
    """How many leading lines of `lines` are already on screen (the end of `shown`)."""
    for start in range(max(0, len(shown) - len(lines)), len(shown)):
        tail = shown[start:]
        if lines[: len(tail)] == tail:
            return len(tail)
    return 0
