"""A look inside a playground answer (`l`): its tokens coloured by the probability the model gave each, and for the
token under the cursor (left/right) that probability, the entropy there and the likeliest tokens in its place.

The looks come from the panel's model process (`{"looks": [...]}`, studio.inference.generate's TokenLook as JSON),
computed by the same `token_looks` as `llm-studio generate --logprobs K`.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from widgets.key_hints import KeyHints
from widgets.token_sample import styled_token

# (lowest probability, background): a token takes the first band its probability reaches
PROBABILITY_BANDS = (
    (0.9, "on $success 45%"),
    (0.5, "on $primary 45%"),
    (0.1, "on $warning 45%"),
    (0.0, "on $error 55%"),
)
CURSOR_STYLE = "reverse bold"
EMPTY_TOKEN = "∅"  # a token whose text is empty on its own (a special token) still takes a cell


def band_style(probability: float) -> str:
    return next(style for lowest, style in PROBABILITY_BANDS if probability >= lowest)


def looks_content(looks: list[dict[str, Any]], cursor: int) -> Content:
    """The answer, each token on its probability's background; the cursor's token reversed."""
    parts = []
    for index, look in enumerate(looks):
        style = CURSOR_STYLE if index == cursor else band_style(look["probability"])
        parts += styled_token(look["text"] or EMPTY_TOKEN, style)
    return Content.assemble(*parts)


def legend() -> Content:
    parts: list[tuple[str, str] | str] = ["p: "]
    upper = "1"
    for lowest, style in PROBABILITY_BANDS:
        parts += [(f" {lowest:g}–{upper} ", style), " "]
        upper = f"{lowest:g}"
    return Content.assemble(*parts)


def look_facts(look: dict[str, Any], index: int, count: int) -> Content:
    """The facts of one token, a line each: which, its probability, the entropy there, then each alternative with
    its own probability, on its band's background."""
    rows = [
        ("token", f"{index + 1} of {count}: {look['text']!r}", ""),
        ("probability", f"{look['probability']:.4f}", band_style(look["probability"])),
        ("entropy", f"{look['entropy']:.4f} nats", ""),
    ]
    for rank, (text, probability) in enumerate(look["alternatives"], start=1):
        rows.append((f"#{rank}", f"{probability:.4f}  {text!r}", band_style(probability)))
    lines = (Content.assemble((f"{label:<13}", "bold"), (value, style)) for label, value, style in rows)
    return Content("\n").join(lines)


class TokenLookScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    TokenLookScreen {
        align: center middle;
    }
    #token-look {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: round $primary;
        border-title-color: $accent;
        background: $surface;
        padding: 0 1;
    }
    #token-look-answer {
        margin: 1 0;
    }
    """

    AUTO_FOCUS = None
    BINDINGS = [
        Binding("left", "move(-1)", "Previous token"),
        Binding("right", "move(1)", "Next token"),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
        Binding("escape,l,q", "dismiss", "Close"),
    ]

    def __init__(self, title: str, looks: list[dict[str, Any]]):
        super().__init__()
        self.title_text = title
        self.looks = looks
        self.cursor = 0

    def compose(self) -> ComposeResult:
        with Vertical(id="token-look") as frame:
            frame.border_title = self.title_text
            yield Static(legend(), id="token-look-legend")
            yield Static(id="token-look-answer")
            yield Label("the token under the cursor", classes="form-section")
            yield Static(id="token-look-facts")
        yield KeyHints()

    def on_mount(self) -> None:
        self.show_cursor()

    def action_move(self, step: int) -> None:
        self.cursor = max(0, min(len(self.looks) - 1, self.cursor + step))
        self.show_cursor()

    def action_move_to(self, index: int) -> None:
        self.cursor = index % len(self.looks)
        self.show_cursor()

    def show_cursor(self) -> None:
        self.query_one("#token-look-answer", Static).update(looks_content(self.looks, self.cursor))
        facts = look_facts(self.looks[self.cursor], self.cursor, len(self.looks))
        self.query_one("#token-look-facts", Static).update(facts)
