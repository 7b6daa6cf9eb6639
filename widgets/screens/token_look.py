"""A look inside a playground answer (`l`): its tokens coloured by the probability the model gave each, and for the
token under the cursor (left/right) that probability, the entropy there and the likeliest tokens in its place.
`a` adds where the model looked when it chose that token: one layer's and one head's attention over the context
(up/down: the layer, [ and ]: the head), each context token on a background as strong as its weight.

The looks come from the panel's model process (`{"looks": [...]}`, studio.inference.generate's TokenLook as JSON),
computed by the same `token_looks` as `llm-studio generate --logprobs K`; the attention of a token is asked of it
through `ask_attention` (an `attend` request) and arrives in `show_attention` (studio.inference.attention's
TokenAttention as JSON, as `generate --attention LAYER:HEAD` computes it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Label, Static

from widgets.key_hints import KeyHints
from widgets.screens.dialog import Sheet
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
ATTENDED_LISTED = 5  # context tokens listed under the attention, the most weighed first
WEIGHT_BAR = 20  # cells of the most weighed token's bar


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


def weight_style(weight: float, most: float) -> str:
    """A context token's background: as strong as its weight against the most weighed one's, in tenths."""
    return f"on $accent {round(10 * weight / most) * 10}%" if most > 0 and weight > 0 else ""


def attention_content(attention: dict[str, Any]) -> Content:
    """Where one head looked: which, the context on backgrounds as strong as their weights, and the tokens weighed
    most with their weights and bars."""
    weights, context = attention["weights"], attention["context"]
    most = max(weights)
    heading = Content.assemble(
        (f"layer {attention['layer'] + 1} of {attention['layers']}", "bold"), " (up/down) · ",
        (f"head {attention['head'] + 1} of {attention['heads']}", "bold"), " ([ ]) · choosing ",
        (repr(attention["token"]), "bold"),
    )  # fmt: skip
    parts = []
    for text, weight in zip(context, weights):
        parts += styled_token(text or EMPTY_TOKEN, weight_style(weight, most))
    order = sorted(range(len(weights)), key=lambda at: -weights[at])[:ATTENDED_LISTED]
    listed = [
        Content.assemble(
            (f"{weights[at]:.3f} ", "bold"),
            ("█" * max(1, round(WEIGHT_BAR * weights[at] / most)), "$accent"),
            f"  {context[at]!r} (token {at + 1} of the context)",
        )  # fmt: skip
        for at in order
    ]
    return Content("\n").join([heading, Content.assemble(*parts), *listed])


class TokenLookScreen(Sheet[None]):
    DEFAULT_CSS = """
    #token-look {
        overflow-y: auto;
    }
    #token-look-answer {
        margin: 1 0;
    }
    #token-look-attention {
        margin-top: 1;
    }
    """

    AUTO_FOCUS = None
    BINDINGS = [
        Binding("left", "move(-1)", "Previous token"),
        Binding("right", "move(1)", "Next token"),
        Binding("home", "move_to(0)", "First", show=False),
        Binding("end", "move_to(-1)", "Last", show=False),
        Binding("a", "toggle_attention", "Attention"),
        Binding("up", "layer(-1)", "Layer −"),
        Binding("down", "layer(1)", "Layer +"),
        Binding("left_square_bracket", "head(-1)", "Head −"),
        Binding("right_square_bracket", "head(1)", "Head +"),
        Binding("escape,l,q", "dismiss", "Close"),
    ]
    ATTENTION_ACTIONS = ("layer", "head")  # only while the attention is shown

    def __init__(
        self, title: str, looks: list[dict[str, Any]], ask_attention: Callable[[int, int, int], None] | None = None
    ):
        """`ask_attention(token, layer, head)` asks the model for an attention, which comes back in `show_attention`;
        without it the view has no attention to show."""
        super().__init__()
        self.title_text = title
        self.looks = looks
        self.cursor = 0
        self.ask_attention = ask_attention
        self.attending = False
        self.layer_index, self.head_index = 0, 0  # the attention shown, counted from 0
        self.model_shape: tuple[int, int] | None = None  # the model's (layers, heads), from its first attention

    def compose(self) -> ComposeResult:
        with Vertical(id="token-look", classes="sheet") as frame:
            frame.border_title = self.title_text
            yield Static(legend(), id="token-look-legend")
            yield Static(id="token-look-answer")
            yield Label("the token under the cursor", classes="form-section")
            yield Static(id="token-look-facts")
            yield Label(
                "where the model looked when it chose it", id="token-look-attention-label", classes="form-section"
            )
            yield Static(id="token-look-attention")
        yield KeyHints()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_attention":
            return self.ask_attention is not None
        if action in self.ATTENTION_ACTIONS:
            return self.attending
        return True

    def on_mount(self) -> None:
        self.show_cursor()
        self.show_attending()

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
        self.ask()

    # ---- the attention (a) ---------------------------------------------------------------------------------
    def action_toggle_attention(self) -> None:
        self.attending = not self.attending
        self.show_attending()
        self.refresh_bindings()
        self.ask()

    def action_layer(self, step: int) -> None:
        self.layer_index = self.moved(self.layer_index, step, self.model_shape[0] if self.model_shape else None)
        self.ask()

    def action_head(self, step: int) -> None:
        self.head_index = self.moved(self.head_index, step, self.model_shape[1] if self.model_shape else None)
        self.ask()

    @staticmethod
    def moved(index: int, step: int, count: int | None) -> int:
        """index + step, kept within 0..count-1 (up to the model's count once it is known)."""
        return max(0, index + step if count is None else min(count - 1, index + step))

    def show_attending(self) -> None:
        for widget in self.query("#token-look-attention-label, #token-look-attention"):
            widget.display = self.attending

    def ask(self) -> None:
        """Ask for the attention behind the cursor's token at the chosen layer and head, when it is shown."""
        if self.attending and self.ask_attention is not None:
            asking = f"asking the model for layer {self.layer_index + 1}, head {self.head_index + 1}..."
            self.query_one("#token-look-attention", Static).update(Content(asking))
            self.ask_attention(self.cursor, self.layer_index, self.head_index)

    def show_attention(self, attention: dict[str, Any]) -> None:
        """An attention from the model, drawn if it is still the one asked for (a newer question may be on its way)."""
        self.model_shape = (attention["layers"], attention["heads"])
        answers = (attention["index"], attention["layer"], attention["head"])
        if answers == (self.cursor, self.layer_index, self.head_index):
            self.query_one("#token-look-attention", Static).update(attention_content(attention))

    def show_attention_problem(self, problem: str) -> None:
        self.query_one("#token-look-attention", Static).update(Content(problem))
