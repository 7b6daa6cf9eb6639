"""A textual-plotext plot that builds its chart only when what it shows has changed.

PlotextPlot rebuilds the whole chart on every render, and Textual renders a widget each time it is shown,
laid out or refreshed for any reason (a tab switch shows every widget of the pane again). Building costs tens
of milliseconds, so this keeps the last built chart and reuses it until `replot()` says the data changed, or the
size or theme did.
"""

from __future__ import annotations

from textual_plotext import PlotextPlot


class CachedPlot(PlotextPlot):
    _data_version = 0
    _built: tuple[tuple, object] | None = None

    def draw(self) -> None:
        """Subclasses put their data on `self.plt` here (called just before a build)."""

    def replot(self) -> None:
        """The data changed: build the chart again at the next render."""
        self._data_version += 1
        self.refresh()

    def render(self):
        key = (self._data_version, self.size, self.app.theme)
        if self._built is None or self._built[0] != key:
            self.draw()
            self._built = (key, super().render())
        return self._built[1]
