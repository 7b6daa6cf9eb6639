"""What every tab's top-level pane shares: it takes the keyboard focus, cheaply."""

from __future__ import annotations


class FocusablePane:
    """Mixed into a tab's pane container (before Horizontal / Vertical).

    The app focuses the shown tab's pane so that its single-key bindings work without a field focused. Textual
    restyles a widget *and all its descendants* whenever its focus changes, which for a pane of forms and
    charts costs about a hundred milliseconds per tab switch; no style depends on a pane's own focus, so the
    pane skips that restyle.
    """

    can_focus = True

    def watch_has_focus(self, has_focus: bool) -> None:
        pass
