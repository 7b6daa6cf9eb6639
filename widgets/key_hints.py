"""The footer line: the keys of whatever has focus, as one rendered line.

Textual's Footer mounts a widget per key and rebuilds them all whenever the focus moves, which on this
app's stylesheet cost a few hundred milliseconds per tab switch on a 2-core machine. This widget redraws a
single line of text instead, from the same source (the screen's active bindings) and on the same signal.
"""

from __future__ import annotations

from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static


class KeyHints(Static):
    DEFAULT_CSS = """
    KeyHints {
        dock: bottom;
        height: 1;
        padding: 0 1;
        background: $footer-background;
        color: $footer-foreground;
    }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.update(self.hints())

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen:
            self.update(self.hints())

    def hints(self) -> Content:
        """`key Description` for every shown binding, one per action, enabled ones only."""
        active = self.screen.active_bindings
        seen: set[str] = set()
        parts: list[Content] = []
        for _node, binding, enabled, _tooltip in active.values():
            if binding.show and enabled and binding.action not in seen:
                seen.add(binding.action)
                parts.append(self._hint(binding.key and self.app.get_key_display(binding), binding.description))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING) if self.app.ENABLE_COMMAND_PALETTE else None
        if palette is not None:
            parts.append(self._hint(self.app.get_key_display(palette[1]), "palette"))
        return Content("  ").join(parts)

    @staticmethod
    def _hint(key: str, description: str) -> Content:
        return Content.from_markup("[b $footer-key-foreground]$key[/] $description", key=key, description=description)
