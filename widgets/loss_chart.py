"""Line charts of metrics against the step (textual-plotext), cheap to keep live.

Building a plotext chart costs more the more points it draws. So points are downsampled to about two per column
(each bucket keeps its min and max, so spikes stay visible), new data only marks the chart dirty, and a timer
redraws at most REDRAWS_PER_SECOND times.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from textual.reactive import reactive

from studio.run_folder.history import task_headlines
from studio.run_folder.watch import RunView
from widgets.cached_plot import CachedPlot

REDRAWS_PER_SECOND = 3
EMA_WEIGHT = 0.9  # smoothing: each shown point is 10% the new value, 90% the previous smoothed one
TRAIN_COLOR, VAL_COLOR = "cyan", "orange"
CE_COLOR, KD_COLOR = "green", "magenta"  # a distilled run's two parts of the loss
EPSILON_COLOR = "red"  # a private run's ε spent, against the loss's axis (it grows from 0 to a few)
METRIC_COLORS = ("green", "yellow", "blue")  # the objective's charted eval metrics, in order (a classifier's: acc, F1)
TASK_COLORS = ("red", "white", "magenta", "blue")  # eval tasks' headline scores, one colour per task in turn
SHARE_AXIS = "right"  # where scores from 0 to 1 are read off, the loss keeping the left-hand axis


@dataclass(frozen=True)
class Curve:
    """One series to draw: a line (train) or points (val), in a plotext colour."""

    label: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    color: str
    points: bool = False
    share: bool = False  # a score from 0 to 1 (a classifier's accuracy, F1): drawn against the right-hand axis


def loss_curves(
    view: RunView, label_prefix: str = "", train_color: str = TRAIN_COLOR, val_color: str = VAL_COLOR
) -> list[Curve]:
    """A run's train loss as a line and validation loss as points (the compare screen draws several runs); a
    distilled run adds the two parts of its loss (cross-entropy and the teacher's KL), a private run the ε it has
    spent, and the objective the scores
    it charts: eval metrics as points (a classifier's validation accuracy and macro-F1), train figures as lines
    (GRPO's reward)."""
    train, val = view.series["loss"], view.series["val_loss"]
    curves = [
        Curve(f"{label_prefix}train", tuple(train.steps), tuple(train.values), train_color),
        Curve(f"{label_prefix}val", tuple(val.steps), tuple(val.values), val_color, points=True),
    ]
    extra = [("ce_loss", "ce", CE_COLOR, False, False), ("kd_loss", "kd", KD_COLOR, False, False)]
    extra.append(("epsilon", "ε spent", EPSILON_COLOR, False, False))
    scores = [(metric, True) for metric in view.charted] + [(metric, False) for metric in view.train_charted]
    for (metric, points), color in zip(scores, METRIC_COLORS):  # shares: on an axis of their own, not the loss's
        extra.append((metric.key, metric.chart_label, color, points, True))
    for (name, task, score), color in zip(task_headlines(view.series), itertools.cycle(TASK_COLORS)):
        extra.append((name, f"{task} {score}", color, True, True))
    for name, label, color, points, share in extra:
        part = view.series[name]
        if part.steps:
            steps, values = tuple(part.steps), tuple(part.values)
            curves.append(Curve(f"{label_prefix}{label}", steps, values, color, points=points, share=share))
    return curves


def downsample(steps: tuple[int, ...], values: tuple[float, ...], buckets: int) -> tuple[list[int], list[float]]:
    """At most 2 * buckets points: per bucket of consecutive points, its min and its max, in step order."""
    if len(steps) <= 2 * buckets:
        return list(steps), list(values)
    size = len(steps) / buckets
    out_steps, out_values = [], []
    for bucket in range(buckets):
        start, stop = int(bucket * size), int((bucket + 1) * size)
        chunk = range(start, stop)
        low = min(chunk, key=values.__getitem__)
        high = max(chunk, key=values.__getitem__)
        for index in sorted({low, high}):
            out_steps.append(steps[index])
            out_values.append(values[index])
    return out_steps, out_values


def ema(values: list[float], weight: float = EMA_WEIGHT) -> list[float]:
    smoothed, current = [], None
    for value in values:
        current = value if current is None else weight * current + (1 - weight) * value
        smoothed.append(current)
    return smoothed


class LossChart(CachedPlot):
    """Curves against the step; `smoothing` (EMA on lines) and `log_scale` are toggled by the screen
    (widgets.screens.chart_screen)."""

    smoothing: reactive[bool] = reactive(False)
    log_scale: reactive[bool] = reactive(False)

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.curves: tuple[Curve, ...] = ()
        self._dirty = False

    def on_mount(self) -> None:
        self.set_interval(1 / REDRAWS_PER_SECOND, self._redraw_if_dirty)

    def show_curves(self, curves: list[Curve]) -> None:
        """New data; drawn at the next redraw tick, and only if something changed."""
        curves = tuple(curves)
        if curves != self.curves:
            self.curves = curves
            self._dirty = True

    def _redraw_if_dirty(self) -> None:
        if self._dirty:
            self._dirty = False
            self.replot()

    def watch_smoothing(self) -> None:
        self.replot()

    def watch_log_scale(self) -> None:
        self.replot()

    def draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.title + (" · EMA" if self.smoothing else "") + (" · log" if self.log_scale else ""))
        plt.yscale("log" if self.log_scale else "linear", yside="left")
        buckets = max(10, self.size.width - 10)  # the plot area is the width less the y-axis labels
        drawn = False
        for curve in self.curves:
            steps, values = self._shown_points(curve, buckets)
            if not steps:
                continue
            draw = plt.scatter if curve.points else plt.plot
            marker = "dot" if curve.points else "braille"
            side = SHARE_AXIS if curve.share else "left"
            draw(steps, values, label=curve.label, color=curve.color, marker=marker, yside=side)
            drawn = True
        if any(curve.share for curve in self.curves):
            plt.ylim(0, 1, yside=SHARE_AXIS)  # a share's whole range, whatever the loss's
            plt.ylabel("score", yside=SHARE_AXIS)
        if not drawn:
            plt.text("waiting for the first points", 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)

    def _shown_points(self, curve: Curve, buckets: int) -> tuple[list[int], list[float]]:
        pairs = [
            (s, v)
            for s, v in zip(curve.steps, curve.values)
            if v is not None and math.isfinite(v) and (v > 0 or not self.log_scale or curve.share)
        ]
        if not pairs:
            return [], []
        steps, values = (list(column) for column in zip(*pairs))
        if self.smoothing and not curve.points:
            values = ema(values)
        return downsample(tuple(steps), tuple(values), buckets)
