"""What the studio's small modal questions share: a bordered box in the middle, its buttons at the bottom right."""

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
