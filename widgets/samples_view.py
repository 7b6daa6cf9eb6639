"""What the model writes from the run's fixed prompts, step by step, newest first, so progress reads at a glance."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

MAX_CHARS = 240  # of one sample shown; the rest stays in events.jsonl


def format_samples(samples: list[tuple[int, list[dict[str, str]]]]) -> Text:
    if not samples:
        return Text("no samples yet (train.sample_interval)", style="dim")
    text = Text()
    for step, items in reversed(samples):
        text.append(f"@{step}\n", style="bold")
        for item in items:
            written = (item.get("prompt", "") + item.get("text", ""))[:MAX_CHARS]
            text.append("  " + repr(written) + "\n")
    return text


class SamplesView(VerticalScroll):
    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = "samples (fixed prompts, newest first)"
        self.shown: tuple[int, int] | None = None  # (how many, the newest step): redraw only when it changes

    def compose(self):
        yield Static(format_samples([]))

    def show(self, samples: list[tuple[int, list[dict[str, str]]]]) -> None:
        shown = (len(samples), samples[-1][0] if samples else -1)
        if shown != self.shown:
            self.shown = shown
            self.query_one(Static).update(format_samples(samples))
