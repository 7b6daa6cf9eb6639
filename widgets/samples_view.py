"""What the model writes from the run's fixed prompts, step by step, newest first, so progress reads at a glance."""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

MAX_CHARS = 240  # of one sample shown; the rest stays in events.jsonl
MAX_LINES = 6
PROMPT_STYLE = "dim italic"  # the fixed prompt, set apart from what the model wrote after it
INDENT = "  "
REWARD_STYLE = "dim"  # a GRPO sample's reward, after its answer


def format_samples(samples: list[tuple[int, list[dict[str, str]]]]) -> Text:
    """Each sample as text, newest step first: its lines as lines, the prompt dimmed before the continuation, and
    its reward after it when it has one (GRPO's: the sum, and each function's when there are several)."""
    if not samples:
        return Text("no samples yet (train.sample_interval)", style="dim")
    text = Text()
    for step, items in reversed(samples):
        text.append(f"@{step}\n", style="bold")
        for item in items:
            prompt, continuation = clip(item.get("prompt", ""), item.get("text", ""))
            text.append(INDENT)
            text.append(indented(prompt), style=PROMPT_STYLE)
            text.append(indented(continuation))
            text.append(reward_note(item), style=REWARD_STYLE)
            text.append("\n")
    return text


def reward_note(item: dict) -> str:
    """ "  [reward 1.50: regex:\\d+ 1.00, length:4 0.50]", or "" for a sample without a reward."""
    reward, rewards = item.get("reward"), item.get("rewards")
    if not isinstance(reward, int | float):
        return ""
    parts = ", ".join(f"{name} {value:.2f}" for name, value in rewards.items()) if isinstance(rewards, dict) else ""
    return f"  [reward {reward:.2f}{': ' + parts if parts and len(rewards) > 1 else ''}]"


def clip(prompt: str, continuation: str) -> tuple[str, str]:
    """Prompt and continuation cut together to MAX_CHARS characters and MAX_LINES lines."""
    whole = "\n".join((prompt + continuation).split("\n")[:MAX_LINES])[:MAX_CHARS]
    return whole[: len(prompt)], whole[len(prompt) :]


def indented(part: str) -> str:
    return part.replace("\n", "\n" + INDENT)


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
