"""What the tabs that edit app.config (Data, Model, Train) share: state comes down from the app.

The app owns the config being edited. A ConfigField posts ConfigChanged up; the app then calls `config_changed`
on every config pane, so each refreshes what it derives (marks, sizes, the command line); after a preset is
loaded it calls `load_config`, so each shows the new values. The panes never talk to each other.
"""

from __future__ import annotations

from widgets.config_field import ConfigField, mark_invalid_fields
from widgets.panes.focus import FocusablePane


class ConfigPane(FocusablePane):
    """Mixed into a tab's pane (before its Textual base). SECTION: the config section its fields edit."""

    SECTION = ""

    def load_config(self) -> None:
        """Show the app's config anew (a preset was loaded)."""
        for field in self.query(ConfigField):
            field.load()
        self.config_changed(self.SECTION)

    def config_changed(self, section: str) -> None:
        """`section` of the app's config changed: mark the fields validate() blames. Panes add what they derive."""
        mark_invalid_fields(self, self.app.config)
