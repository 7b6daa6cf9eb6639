"""SIGTERM and SIGINT ask the trainer to stop: a flag the loop reads at each step, set from the first instant.

The trainer's entry (studio/train/__main__.py) installs the handler before it imports torch, which takes
seconds, so a signal that arrives while the trainer starts still ends the run as `stopped`, with a line in
trainer.log, never as an unexplained `crashed`.
"""

from __future__ import annotations

import signal
import sys

received: str | None = None  # the name of the first stop signal received, if any


def install() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _on_signal(signum: int, frame: object) -> None:
    global received
    if received is None:
        received = signal.Signals(signum).name
        print(f"{received} received: the trainer stops at its next step", file=sys.stderr, flush=True)
