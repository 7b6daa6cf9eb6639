"""What the screens led by a loss chart share: `l` and `m` toggle its log scale and its smoothing."""

from __future__ import annotations

from textual.binding import Binding
from textual.screen import Screen

from widgets.loss_chart import LossChart


class ChartScreen(Screen):
    """A full screen whose main chart is the LossChart matching CHART. Subclasses list CHART_KEYS in their
    BINDINGS where the footer should show them."""

    AUTO_FOCUS = None
    CHART = "LossChart"
    CHART_KEYS = [
        Binding("l", "toggle_chart('log_scale')", "Log scale"),
        Binding("m", "toggle_chart('smoothing')", "Smoothing"),
    ]

    def action_toggle_chart(self, setting: str) -> None:
        chart = self.query_one(self.CHART, LossChart)
        setattr(chart, setting, not getattr(chart, setting))
