"""What the studio's modal screens share: a small question's bordered box in the middle with its buttons at the bottom
right (`Dialog`), or a wide box to read (`Sheet`: the keys, a look inside an answer)."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """Subclasses compose one Vertical: their question, then a Horizontal of buttons."""

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }
    Dialog > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        padding: 1 2;
        border: thick $primary;
        background: $surface;
    }
    Dialog Horizontal {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }
    Dialog Button {
        margin-left: 1;
    }
    """


class Sheet(ModalScreen[ResultType]):
    """Subclasses compose one container of the class `sheet` (what they show), then their KeyHints."""

    DEFAULT_CSS = """
    Sheet {
        align: center middle;
    }
    Sheet > .sheet {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: round $primary;
        border-title-color: $accent;
        background: $surface;
        padding: 0 1;
    }
    """
