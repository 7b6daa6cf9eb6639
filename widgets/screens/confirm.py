"""A yes/no question in a modal: `y` or the confirm button answers yes; `n`, `escape` or Cancel answer no."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label

from widgets.screens.dialog import Dialog


class ConfirmScreen(Dialog[bool]):
    AUTO_FOCUS = None
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, confirm: str = "Yes"):
        super().__init__()
        self.question = question
        self.confirm = confirm

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Cancel (n)", id="cancel")
                yield Button(f"{self.confirm} (y)", id="confirm", variant="error")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def answer_with_button(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")
