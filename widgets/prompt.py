"""Text fields where `ctrl+a` selects all, as in most editors and browsers (Textual's own TextArea and Input move
the cursor to the start of the line on it; `home` still does)."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input, TextArea

SELECT_ALL = Binding("ctrl+a", "select_all", "Select all", show=False)


class PromptArea(TextArea):
    BINDINGS = [SELECT_ALL]


class PromptInput(Input):
    BINDINGS = [SELECT_ALL]
