"""Key-press-to-screen latency of the studio while a run trains on every core, and the UI process's CPU use.

    PYTHONPATH=. python benchmarks/ui_latency.py [--presses 100]

Starts a tiny run in the background (one trainer process; torch uses all cores), drives the studio headless
(App.run_test) at 160x48 and presses keys: switching tabs, moving in the runs table, toggling log scale and
smoothing on the live dashboard. A press's latency is the time from sending the key to the next frame the app
composes (App._display), or to the key being fully handled when nothing on screen changed. Prints p50 / p95 per
kind of key and overall, and the UI process's CPU use over the measurement window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "data.tokenizer": "char",
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 64,
    "model.block_size": 64,
    "train.batch_size": 16,
    "train.warmup_steps": 5,
    "train.log_interval": 5,
    "train.eval_interval": 50,
    "train.eval_steps": 2,
    "train.sample_interval": 100,
    "train.sample_tokens": 16,
    "train.max_steps": 1_000_000,
    "train.checkpoint_interval": 1_000_000,
}


def make_runs(corpus: Path, idle_runs: int) -> Path:
    """One live run, launched; `idle_runs` created but never launched, so the runs table has rows to move in."""
    from studio.config import set_field
    from studio.presets import load_preset
    from studio.runs.control import launch
    from studio.runs.prepare import prepare_run

    def config():
        cfg = load_preset("tiny")
        cfg.data.source = str(corpus)
        for key, value in TINY.items():
            set_field(cfg, key, value)
        return cfg

    for index in range(idle_runs):
        prepare_run(config(), f"idle-{index}")
    live = prepare_run(config(), "live")
    launch(live)
    return live


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def measure(live: Path, presses: int) -> tuple[dict[str, list[float]], float, float]:
    from studio.run_folder.watch import RunWatcher
    from widgets.app import StudioApp

    app = StudioApp()
    frames: list[float] = []
    display = app._display

    def timed_display(screen, renderable):
        if renderable is not None:
            frames.append(time.perf_counter())
        return display(screen, renderable)

    app._display = timed_display
    latencies: dict[str, list[float]] = {
        "tab first visit": [],
        "tab switch": [],
        "runs table move": [],
        "chart toggle": [],
    }

    async with app.run_test(size=(160, 48)) as pilot:

        async def press(kind: str, key: str) -> None:
            started = time.perf_counter()
            count = len(frames)
            await pilot.press(key)
            deadline = time.perf_counter() + 0.5
            while len(frames) == count and time.perf_counter() < deadline:
                await asyncio.sleep(0.001)
            shown = frames[count] if len(frames) > count else time.perf_counter()
            latencies[kind].append(shown - started)

        watcher = RunWatcher(live)
        while not (watcher.poll() and watcher.series["loss"].steps):  # training, and logging
            await pilot.pause(0.5)
        await pilot.press("escape")  # the studio opened on the live run's dashboard: back to the tabs
        process = psutil.Process()
        cpu_before, wall_before = sum(process.cpu_times()[:2]), time.perf_counter()
        per_kind = max(1, presses // 3)
        for key in "2345":  # the first showing of a tab lays out and renders it whole: once per session
            await press("tab first visit", key)
            await pilot.pause(0.3)
        for index in range(per_kind):
            await press("tab switch", "12345"[index % 5])
            await pilot.pause(0.05)  # a person does not type faster than this; lets the poll timers run too
        await press("tab switch", "4")
        await pilot.pause(0.3)
        for index in range(per_kind):
            await press("runs table move", "down" if (index // 5) % 2 == 0 else "up")
        await pilot.press("end", "enter")  # the live run is the newest: the last row
        await pilot.pause(1.0)
        for index in range(presses - 2 * per_kind):
            await press("chart toggle", "l" if index % 2 == 0 else "m")
            await pilot.pause(0.05)  # a person does not type faster than this; lets the poll timers run too
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        wall = time.perf_counter() - wall_before
    return latencies, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=100)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llm-studio-bench-"))
    os.environ["LLM_STUDIO_HOME"] = str(home)
    sys.path.insert(0, str(PROJECT_ROOT))
    from studio.runs.control import stop_run

    corpus = home / "corpus.txt"
    corpus.write_text(
        "\n\n".join(Path(m.__file__).read_text(encoding="utf-8") for m in (argparse, statistics, tempfile)),
        encoding="utf-8",
    )
    live = make_runs(corpus, idle_runs=6)
    try:
        latencies, cpu, wall = asyncio.run(measure(live, args.presses))
    finally:
        stop_run(live, timeout=30)
    everything = [value for kind, values in latencies.items() if kind != "tab first visit" for value in values]
    print(f"UI latency over {len(everything)} presses while training on {os.cpu_count()} cores (ms):")
    for kind, values in [*latencies.items(), ("all but first visits", everything)]:
        print(
            f"  {kind:20} p50 {1000 * statistics.median(values):6.1f}   p95 {1000 * percentile(values, 0.95):6.1f}"
            f"   max {1000 * max(values):6.1f}   (n={len(values)})"
        )
    print(
        f"UI process CPU: {100 * cpu / wall:.0f}% of one core over {wall:.1f} s "
        f"(including the benchmark's own driving); 'torch' imported in the UI: {'torch' in sys.modules}"
    )


if __name__ == "__main__":
    main()
