"""`llm-studio report RUN [RUN ...] --out DIR`: one self-contained HTML page about runs, to share with someone who
has no terminal. Torch-free: it reads run folders only.

The page holds the loss curves as inline SVG (train as lines, validation as points, one colour per run), the
config keys whose values differ between the runs, each run's final metrics, and the samples of each run by step.
Nothing is loaded from elsewhere: no script, no font, no image.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from studio.config import RunConfig, field_names, format_value
from studio.formatting import format_count, format_loss
from studio.output_folder import check_replaceable, replaced_whole
from studio.run_folder.history import run_scores
from studio.run_folder.layout import read_config, run_or_folder
from studio.run_folder.watch import RunView, RunWatcher

REPORT = "index.html"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT, MARGIN = 720, 320, 48  # the chart, in SVG units


@dataclass
class RunPage:
    name: str
    config: RunConfig
    view: RunView
    color: str


def write_report(runs: list[str], out: Path) -> Path:
    """Write the report of `runs` (names or run folders) into the folder `out`; returns the page."""
    pages = [_read(run, COLORS[index % len(COLORS)]) for index, run in enumerate(runs)]
    out = out.expanduser().resolve()
    check_replaceable(out)
    with replaced_whole(out, {"report": [page.name for page in pages]}) as staging:
        (staging / REPORT).write_text(render(pages), encoding="utf-8")
    return out / REPORT


def _read(run: str, color: str) -> RunPage:
    run_dir = run_or_folder(run)
    watcher = RunWatcher(run_dir)
    watcher.poll()
    return RunPage(run_dir.name, read_config(run_dir), watcher.view(), color)


# ---- the page ------------------------------------------------------------------------------------
def render(pages: list[RunPage]) -> str:
    names = ", ".join(page.name for page in pages)
    sections = [
        f"<h1>llm-studio report: {_e(names)}</h1>",
        "<h2>Loss</h2>",
        loss_chart(pages),
        "<h2>Final metrics</h2>",
        metrics_table(pages),
        "<h2>Config</h2>",
        config_table(pages),
        "<h2>Samples</h2>",
        *(samples_section(page) for page in pages),
    ]
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>llm-studio report: {_e(names)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}pre{background:#f6f6f6;padding:.4em;"
    "white-space:pre-wrap}.prompt{color:#888;font-style:italic}svg text{font-size:11px}"
)


def loss_chart(pages: list[RunPage]) -> str:
    """Train loss as a polyline and validation loss as dots, for every run, on shared axes."""
    points = [(s, v) for page in pages for key in ("loss", "val_loss") for s, v in _finite(page.view, key)]
    if not points:
        return "<p>No loss logged yet.</p>"
    x_max = max(max(s for s, _ in points), 1)
    y_low, y_high = min(v for _, v in points), max(v for _, v in points)
    y_high = y_high if y_high > y_low else y_low + 1.0

    def x(step: float) -> float:
        return MARGIN + (WIDTH - 2 * MARGIN) * step / x_max

    def y(value: float) -> float:
        return HEIGHT - MARGIN - (HEIGHT - 2 * MARGIN) * (value - y_low) / (y_high - y_low)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' role='img'>"]
    parts.append(_axes(x_max, y_low, y_high, x, y))
    for index, page in enumerate(pages):
        train = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in _finite(page.view, "loss"))
        if train:
            parts.append(f"<polyline fill='none' stroke='{page.color}' stroke-width='1.5' points='{train}'/>")
        for s, v in _finite(page.view, "val_loss"):
            parts.append(f"<circle cx='{x(s):.1f}' cy='{y(v):.1f}' r='3' fill='{page.color}'/>")
        parts.append(
            f"<text x='{WIDTH - MARGIN + 4}' y='{MARGIN + 14 * index}' fill='{page.color}'>{_e(page.name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts) + "<p>train loss: lines; validation loss: dots; x: step.</p>"


def _axes(x_max: float, y_low: float, y_high: float, x, y) -> str:
    bottom, left = HEIGHT - MARGIN, MARGIN
    parts = [
        f"<line x1='{left}' y1='{bottom}' x2='{WIDTH - MARGIN}' y2='{bottom}' stroke='#444'/>",
        f"<line x1='{left}' y1='{MARGIN}' x2='{left}' y2='{bottom}' stroke='#444'/>",
    ]
    for fraction in (0, 0.25, 0.5, 0.75, 1):
        step, value = x_max * fraction, y_low + (y_high - y_low) * fraction
        parts.append(f"<text x='{x(step):.1f}' y='{bottom + 16}' text-anchor='middle'>{format_count(step)}</text>")
        parts.append(f"<text x='{left - 6}' y='{y(value) + 4:.1f}' text-anchor='end'>{value:.3g}</text>")
    return "".join(parts)


def _finite(view: RunView, key: str) -> list[tuple[int, float]]:
    series = view.series[key]
    return [(s, v) for s, v in zip(series.steps, series.values) if math.isfinite(v)]


def metrics_table(pages: list[RunPage]) -> str:
    """Each run's losses, tokens and, when any run has them, its scores (a classifier's, eval tasks' last and best)
    and its privacy spent (a private run's ε)."""
    scores = [run_scores(page.view.charted, page.view.series) for page in pages]
    private = any(page.view.privacy for page in pages)
    header = ("run", "status", "step", "train loss", "val loss", "tokens seen", *(["scores"] if any(scores) else []),
              *(["privacy"] if private else []))  # fmt: skip
    rows = []
    for page, score in zip(pages, scores):
        last = {key: page.view.series[key].last() for key in ("loss", "val_loss")}
        rows.append(
            (
                page.name,
                page.view.status,
                f"{page.view.step}/{page.view.max_steps}",
                format_loss(last["loss"]),
                format_loss(last["val_loss"]),
                "-" if page.view.tokens_seen is None else format_count(page.view.tokens_seen),
                *([score or "-"] if any(scores) else []),
                *([page.view.privacy or "-"] if private else []),
            )
        )
    return _table(header, rows)


def config_table(pages: list[RunPage]) -> str:
    """The keys whose values differ between the runs (every key, for a single run)."""
    keys = ["preset", *field_names()]
    values = {key: [_config_value(page.config, key) for page in pages] for key in keys}
    shown = [key for key in keys if len(pages) == 1 or len(set(values[key])) > 1]
    if not shown:
        return "<p>The runs have the same config.</p>"
    return _table(("key", *(page.name for page in pages)), [(key, *values[key]) for key in shown])


def _config_value(config: RunConfig, key: str) -> str:
    return config.preset if key == "preset" else format_value(config.value(key))


def samples_section(page: RunPage) -> str:
    parts = [f"<h3>{_e(page.name)}</h3>"]
    if not page.view.samples:
        parts.append("<p>No samples.</p>")
    for step, items in reversed(page.view.samples):
        texts = "\n\n".join(
            f"<span class='prompt'>{_e(item.get('prompt', ''))}</span>{_e(item.get('text', ''))}" for item in items
        )
        parts.append(f"<p><b>step {step}</b></p><pre>{texts}</pre>")
    return "\n".join(parts)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{_e(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
