"""The machine while a run trains: per GPU utilisation, memory, temperature and power (NVML), or CPU and RAM when
there is no NVIDIA GPU; the run's memory, estimated beside the measured peak (from its events); below it, the run's
own allocated / peak GPU memory against the step, or, without a GPU, CPU, RAM and the trainer's resident memory
over the last minutes, in % of the machine. Once the run has ended the panel is the run's own history ("hardware
during the run"): the memory its trainer recorded at each step (peak RSS on a CPU), not the machine now, which no
longer says anything about the run.

Stats are read in a thread worker about once a second: an NVML call can stall, and the event loop must not.
studio.hardware never raises for want of a driver, so neither does this panel.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from studio.formatting import format_bytes, format_memory
from studio.hardware import CpuStats, GpuStats, cpu_stats, gpu_stats, process_memory
from studio.run_folder.status import FINAL_STATES, trainer_pid
from studio.run_folder.watch import RunView
from widgets.loss_chart import Curve, LossChart

POLL_SECONDS = 1.0
HISTORY_POINTS = 180  # readings kept for the CPU chart: three minutes at one a second
ENDED_STATES = (*FINAL_STATES, "crashed")  # a run whose trainer is gone: its panel shows what it recorded
GIGABYTES = 1 / 1024**3  # as format_bytes and nvidia-smi count


def _maybe(value: float | None, unit: str) -> str:
    return "N/A" if value is None else f"{value:.0f}{unit}"


def describe_gpu(gpu: GpuStats) -> str:
    power = f"{_maybe(gpu.power, '')}/{_maybe(gpu.power_limit, ' W')}"
    return (
        f"GPU{gpu.index} {gpu.name}\n  util {_maybe(gpu.utilization, '%')}  "
        f"mem {format_bytes(gpu.memory_used)}/{format_bytes(gpu.memory_total)}  "
        f"{_maybe(gpu.temperature, '°C')}  power {power}"
    )


def describe_cpu(cpu: CpuStats) -> str:
    return (
        f"no NVIDIA GPU: showing CPU and RAM\nCPU {cpu.utilization:.0f}% of {cpu.cores} cores  "
        f"RAM {format_bytes(cpu.ram_used)}/{format_bytes(cpu.ram_total)}"
    )


def memory_line(view: RunView) -> str:
    """The run's memory per process, estimated and measured, once its trainer has said (its `running` event)."""
    facts, peaks = view.memory, view.series["mem_peak"].values
    if facts is None:
        return ""
    return format_memory(facts.estimate, int(max(peaks)) if peaks else None, facts.measure, facts.baseline)


def describe_machine(gpus: list[GpuStats], cpu: CpuStats) -> str:
    lines = [describe_gpu(gpu) for gpu in gpus] if gpus else [describe_cpu(cpu)]
    if gpus:
        lines.append(f"CPU {cpu.utilization:.0f}%  RAM {format_bytes(cpu.ram_used)}/{format_bytes(cpu.ram_total)}")
    return "\n".join(lines)


class HardwarePanel(Vertical):
    DEFAULT_CSS = """
    HardwarePanel #machine-stats, HardwarePanel #run-memory-line {
        height: auto;
    }

    HardwarePanel #run-memory, HardwarePanel #machine-history {
        height: 1fr;
    }
    """

    def __init__(self, run_dir: Path | None = None, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = "hardware"
        self.run_dir = run_dir  # whose trainer's memory to chart
        self.machine = ""  # the last description shown (tests read it)
        self.history: deque[tuple[int, float, float, float | None]] = deque(maxlen=HISTORY_POINTS)
        self.polls = 0
        self.run_ended = False  # then the panel shows the run's recorded memory, not the machine

    def compose(self) -> ComposeResult:
        yield Static("reading the machine…", id="machine-stats")
        shown_later = [
            Static("", id="run-memory-line"),
            LossChart("the run's memory (GB)", id="run-memory"),
            LossChart("CPU · RAM · trainer RSS, % of the machine, per second", id="machine-history"),
        ]
        for widget in shown_later:  # hidden from the start: a query in on_mount can race the screen's removal
            widget.display = False
            yield widget

    def on_mount(self) -> None:
        self.read_machine()
        self.set_interval(POLL_SECONDS, self.read_machine)

    @work(thread=True, exclusive=True, group="hardware", exit_on_error=False)
    def read_machine(self) -> None:
        if self.run_ended:
            return
        gpus, cpu = gpu_stats(), cpu_stats()
        pid = trainer_pid(self.run_dir) if self.run_dir is not None else None
        rss = process_memory(pid) if pid is not None else None
        self.app.call_from_thread(self._show_machine, describe_machine(gpus, cpu), None if gpus else (cpu, rss))

    def _show_machine(self, text: str, cpu_only: tuple[CpuStats, int | None] | None) -> None:
        if self.run_ended:  # a reading that was under way when the run was found ended
            return
        if text != self.machine:
            self.machine = text
            self.query_one("#machine-stats", Static).update(text)
        if cpu_only is not None:
            self._chart_cpu(*cpu_only)

    def _chart_cpu(self, cpu: CpuStats, trainer_rss: int | None) -> None:
        """No GPU: CPU, RAM and the trainer's memory over time (shown from the second reading on)."""
        self.polls += 1
        ram = 100 * cpu.ram_used / cpu.ram_total
        rss = None if trainer_rss is None else 100 * trainer_rss / cpu.ram_total
        self.history.append((self.polls, cpu.utilization, ram, rss))
        chart = self.query_one("#machine-history", LossChart)
        chart.display = len(self.history) > 1
        ticks = tuple(point[0] for point in self.history)
        trainer = [(tick, value) for tick, *_, value in self.history if value is not None]
        chart.show_curves(
            [
                Curve("CPU", ticks, tuple(point[1] for point in self.history), "cyan"),
                Curve("RAM", ticks, tuple(point[2] for point in self.history), "orange"),
                Curve("trainer", tuple(t for t, _ in trainer), tuple(v for _, v in trainer), "green"),
            ]
        )

    def show_run_memory(self, view: RunView) -> None:
        """The run's memory: the estimate beside the measured peak; on a GPU, allocated and peak per step (a CPU
        run logs no allocated memory, and the chart stays hidden while it trains: the machine's chart shows the
        trainer's RSS). An ended run's panel is its history alone: the peaks it recorded, on a CPU too."""
        self._show_run_ended(view.status in ENDED_STATES, view.status, recorded=bool(view.series["mem_peak"].steps))
        line = memory_line(view)
        self.query_one("#run-memory-line", Static).update(line)
        self.query_one("#run-memory-line").display = bool(line)
        allocated, peak = view.series["mem_allocated"], view.series["mem_peak"]
        chart = self.query_one("#run-memory", LossChart)
        chart.display = bool(allocated.steps) or (self.run_ended and bool(peak.steps))
        peak_label = "peak RSS" if view.memory is not None and view.memory.measure == "rss" else "GPU peak"
        curves = [("GPU allocated", allocated, "cyan")] if allocated.steps else []  # none on a CPU
        curves.append((peak_label, peak, "orange"))
        chart.show_curves(
            [
                Curve(label, tuple(series.steps), tuple(v * GIGABYTES for v in series.values), color)
                for label, series, color in curves
            ]
        )

    def _show_run_ended(self, ended: bool, status: str, recorded: bool) -> None:
        """Once the run's trainer is gone, the machine now says nothing about it: the title and the first line say
        that what follows is the run's own record, and the machine is no longer read (again if it is resumed)."""
        self.run_ended = ended
        self.border_title = "hardware during the run" if ended else "hardware"
        self.query_one("#machine-history").display = not ended and len(self.history) > 1
        if ended:
            record = "its memory as its trainer recorded it, step by step" if recorded else "it recorded no memory"
            self.machine = f"the run {status}: {record}"
            self.query_one("#machine-stats", Static).update(self.machine)
