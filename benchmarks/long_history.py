"""A run with a long history: how fast `runs`, the dashboard and `report` are, and how much memory they take.

    python benchmarks/long_history.py [--events 1000000]

Writes a run folder in a temporary home (events written directly, no training: ~210 bytes per train event, as a
GPU run's with every metric), then measures each reader in a child process of its own: wall time and peak RSS,
and the report's size. Twice: with no summary beside the events (the first reader of a folder an older version
wrote), and with the summary the trainer leaves when it ends (studio.run_folder.history.update_summary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = "long"
DASHBOARD = """
import sys, time
from pathlib import Path
from textual.app import App
from widgets.screens.dashboard import DashboardScreen

class Bench(App):
    def on_mount(self):
        self.started = time.perf_counter()
        self.screen_ = DashboardScreen(Path(sys.argv[1]))
        self.push_screen(self.screen_)

async def main():
    app = Bench()
    async with app.run_test(size=(160, 48)) as pilot:
        while app.screen_.view is None:
            await pilot.pause(0.02)
        await pilot.pause()
        print(f"charts after {time.perf_counter() - app.started:.2f} s", file=sys.stderr)

import asyncio
asyncio.run(main())
"""


def write_run(home: Path, events: int) -> Path:
    from studio.config import RunConfig

    run_dir = home / "runs" / RUN
    run_dir.mkdir(parents=True)
    config = RunConfig(preset="tiny")
    config.train.max_steps = events
    config.data.dataset = "benchmark"
    config.save(run_dir / "config.toml")
    t0 = 1_700_000_000.0
    with open(run_dir / "events.jsonl", "w", encoding="utf-8") as file:
        file.write(json.dumps({"t": t0, "kind": "status", "step": 0, "state": "running", "max_steps": events}) + "\n")
        for step in range(1, events + 1):
            train = {
                "t": round(t0 + step * 0.1, 3), "kind": "train", "step": step, "loss": 2.0 + 1.0 / step ** 0.3,
                "lr": 3e-4 * (1 - step / events), "grad_norm": 0.5 + (step % 7) / 10, "tokens_per_s": 123456.7,
                "tokens_seen": step * 524288, "mfu": 0.4123, "mem_allocated": 12_345_678_901,
                "mem_peak": 23_456_789_012,
            }  # fmt: skip
            file.write(json.dumps(train) + "\n")
            if step % 1000 == 0:
                file.write(json.dumps({"t": t0 + step * 0.1, "kind": "eval", "step": step, "val_loss": 2.1}) + "\n")
        file.write(json.dumps({"t": t0 + events * 0.1, "kind": "status", "step": events, "state": "finished"}) + "\n")
    (run_dir / "trainer.log").write_text("done\n", encoding="utf-8")
    return run_dir


def measure(what: str, command: list[str], env: dict[str, str]) -> None:
    """Run `command` as a child; print its wall time, peak RSS and the last line of its stderr/stdout."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    last = output.strip().splitlines()[-1] if output.strip() else ""
    print(f"  {what:<10} {seconds:6.2f} s  peak RSS {usage.ru_maxrss / 1024:7.0f} MB  rc {status >> 8}  | {last}")


def reader_commands(run_dir: Path, home: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "studio.cli"]
    return {
        "runs": [*cli, "runs"],
        "dashboard": [sys.executable, "-c", DASHBOARD, str(run_dir)],
        "report": [*cli, "report", RUN, "--out", str(home / f"report-{time.time_ns()}")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    from studio.run_folder.history import update_summary
    from studio.run_folder.layout import EVENTS_SUMMARY

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        env = {**os.environ, "LLM_STUDIO_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        run_dir = write_run(home, args.events)
        size = (run_dir / "events.jsonl").stat().st_size
        print(f"{args.events:,} train events, events.jsonl {size / 1e6:.0f} MB")
        print("no summary beside the events (each reader is the first):")
        for reader, command in reader_commands(run_dir, home).items():
            (run_dir / EVENTS_SUMMARY).unlink(missing_ok=True)
            measure(reader, command, env)
        print("with the summary the trainer leaves when it ends:")
        update_summary(run_dir)
        for reader, command in reader_commands(run_dir, home).items():
            measure(reader, command, env)


if __name__ == "__main__":
    main()
