"""The learning-rate curve of the schedule as set, redrawn shortly after the last edit (not on every keystroke)."""

from __future__ import annotations

import dataclasses

from studio.config import TrainConfig
from studio.train.schedule import lr_curve
from widgets.cached_plot import CachedPlot

REDRAW_DELAY = 0.15  # seconds: typing "3e-4" redraws once, not four times


class LrPreview(CachedPlot):
    def on_mount(self) -> None:
        self.pending: TrainConfig | None = None
        self.shown: TrainConfig | None = None  # the schedule drawn last
        self.redraw_timer = None

    def show_schedule(self, train: TrainConfig) -> None:
        self.pending = dataclasses.replace(train)
        if self.redraw_timer is not None:
            self.redraw_timer.stop()
        self.redraw_timer = self.set_timer(REDRAW_DELAY, self.redraw)

    def on_resize(self) -> None:
        """The curve is sampled to the plot's width: a new width (or the tab being shown) draws it again."""
        if self.shown is not None and self.pending is None:
            self.show_schedule(self.shown)

    def redraw(self) -> None:
        train, self.pending, self.redraw_timer = self.pending, None, None
        if train is None:
            return
        # two points per column is all a braille plot can show
        points = lr_curve(train, points=max(20, 2 * self.size.width))
        plot = self.plt
        plot.clear_data()
        plot.title(f"learning rate ({train.schedule}, warmup {train.warmup_steps})")
        plot.xlabel("step")
        plot.plot([step for step, _ in points], [lr for _, lr in points], marker="braille")
        self.shown = train
        self.replot()
