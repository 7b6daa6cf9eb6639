"""One config key as a form row: its label, an editor that fits the key's type, and the reason a value is refused.

The label, the editor's kind (a Select for a field with allowed values) and the tooltip all come from the key's
declaration in studio.config, so a form row is just `ConfigField("section.key")`.

The field edits `app.config` in place through set_field, so the app's config stays the single state; it posts
ConfigChanged for its section and the app tells every pane to refresh what it derives. A value set_field
refuses (text in a number field) stays in the editor, marked, and the config keeps its last good value.
"""

from __future__ import annotations

import re
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.dom import DOMNode
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from studio.config import RunConfig, field_spec, format_value, set_field, validate
from studio.errors import StudioError
from widgets.messages import ConfigChanged


class MarkedCheckbox(Checkbox):
    """A checkbox whose state reads without colour: ✓ when on, blank when off (Textual draws an X in both)."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 (Textual's class constant, read per render)
        return "✓" if self.value else " "


class ConfigField(Widget):
    """Edits `section.key` of app.config: a Checkbox for booleans, a Select for allowed values, else an Input."""

    DEFAULT_CSS = """
    ConfigField {
        layout: grid;
        grid-size: 2;
        grid-columns: 18 1fr;
        grid-rows: auto;
        height: auto;
    }
    ConfigField .field-label {
        color: $text-muted;
    }
    ConfigField Checkbox {
        width: 5;  /* auto cuts the compact box to "X…" */
    }
    ConfigField .field-error {
        display: none;
        column-span: 2;
        color: $text-error;
        padding-left: 18;
    }
    ConfigField.-invalid .field-error {
        display: block;
    }
    ConfigField.-invalid .field-label {
        color: $text-error;
        text-style: bold;
    }
    ConfigField.-invalid Input {
        background: $error 25%;
    }
    """

    type_error: reactive[str] = reactive("", init=False)  # set_field refused what was typed
    validation_error: reactive[str] = reactive("", init=False)  # validate() blames this key

    def __init__(self, key: str) -> None:
        super().__init__(classes="config-field")
        spec = field_spec(key)
        self.config_key, self.label, self.choices = key, spec.label, spec.choices
        self.section, _, self.name_in_section = key.partition(".")
        self.tooltip = spec.help

    def compose(self) -> ComposeResult:
        value = self._config_value()
        yield Label(self.label, classes="field-label")
        if isinstance(value, bool):
            yield MarkedCheckbox(value=value, compact=True, classes="field-editor")
        elif self.choices:
            yield Select(
                [(choice, choice) for choice in self.choices],
                value=value,
                allow_blank=False,
                compact=True,
                classes="field-editor",
            )
        else:
            yield Input(format_value(value), compact=True, classes="field-editor")
        yield Static("", classes="field-error")

    # ---- config -> editor ---------------------------------------------------------------------------
    def load(self) -> None:
        """Show the config's value (after a preset was loaded); drops a refused value that was typed."""
        editor = self.query_one(".field-editor")
        value = self._config_value()
        self.type_error = ""
        if isinstance(editor, Input):
            if editor.value != format_value(value):
                editor.value = format_value(value)
        elif editor.value != value:
            editor.value = value

    def assign(self, value: str) -> None:
        """Put a value into the editor as if typed: it goes to the config the usual way."""
        self.query_one(".field-editor").value = value

    def _config_value(self) -> Any:
        return getattr(getattr(self.app.config, self.section), self.name_in_section)

    # ---- editor -> config ---------------------------------------------------------------------------
    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _edited(self, event: Input.Changed | Select.Changed | Checkbox.Changed) -> None:
        event.stop()
        if event.value == self._config_value() or (
            isinstance(event, Input.Changed) and event.value == format_value(self._config_value())
        ):
            self.type_error = ""
            return
        try:
            set_field(self.app.config, self.config_key, event.value, where=self.label)
        except StudioError as error:
            self.type_error = str(error)
            return
        self.type_error = ""
        self.post_message(ConfigChanged(self.section))

    # ---- marks --------------------------------------------------------------------------------------
    def blamed_by(self, error: str) -> bool:
        """Whether a validate() message names this key (`model.n_head`, or `n_head` in a `model: ...` message)."""
        if self.config_key in error:
            return True
        return error.startswith(f"{self.section}:") and re.search(rf"\b{self.name_in_section}\b", error) is not None

    def watch_type_error(self) -> None:
        self._show_error()

    def watch_validation_error(self) -> None:
        self._show_error()

    def _show_error(self) -> None:
        error = self.type_error or self.validation_error
        self.set_class(bool(error), "-invalid")
        self.query_one(".field-error", Static).update(f"✗ {error}" if error else "")


def form_section(title: str, *keys: str) -> list[Widget]:
    """A section of a form: its title, then one row per config key."""
    return [Label(title, classes="form-section"), *(ConfigField(key) for key in keys)]


def mark_invalid_fields(container: DOMNode, config: RunConfig) -> str:
    """Run validate() and mark the container's fields it blames; returns its message ("" when valid)."""
    try:
        validate(config)
        error = ""
    except StudioError as failure:
        error = str(failure)
    for field in container.query(ConfigField):
        field.validation_error = error if error and field.blamed_by(error) else ""
    return error


def concerns(error: str, sections: tuple[str, ...]) -> bool:
    """Whether a validate() message is about one of these config sections."""
    return any(error.startswith(f"{section}.") or error.startswith(f"{section}:") for section in sections)
