"""The machine while a run trains: per GPU utilisation, memory, temperature and power (NVML), or CPU and RAM when
there is no NVIDIA GPU; below it, the run's own allocated / peak GPU memory against the step (from its events).

Stats are read in a thread worker about once a second: an NVML call can stall, and the event loop must not.
studio.hardware never raises for want of a driver, so neither does this panel.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from studio.formatting import format_bytes
from studio.hardware import CpuStats, GpuStats, cpu_stats, gpu_stats
from studio.run_folder.watch import Series
from widgets.loss_chart import Curve, LossChart

POLL_SECONDS = 1.0


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


def describe_machine(gpus: list[GpuStats], cpu: CpuStats) -> str:
    lines = [describe_gpu(gpu) for gpu in gpus] if gpus else [describe_cpu(cpu)]
    if gpus:
        lines.append(f"CPU {cpu.utilization:.0f}%  RAM {format_bytes(cpu.ram_used)}/{format_bytes(cpu.ram_total)}")
    return "\n".join(lines)


class HardwarePanel(Vertical):
    DEFAULT_CSS = """
    HardwarePanel #machine-stats {
        height: auto;
    }

    HardwarePanel #run-memory {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = "hardware"
        self.machine = ""  # the last description shown (tests read it)

    def compose(self) -> ComposeResult:
        yield Static("reading the machine…", id="machine-stats")
        yield LossChart("run GPU memory (GB)", id="run-memory")

    def on_mount(self) -> None:
        self.query_one("#run-memory").display = False
        self.read_machine()
        self.set_interval(POLL_SECONDS, self.read_machine)

    @work(thread=True, exclusive=True, group="hardware", exit_on_error=False)
    def read_machine(self) -> None:
        text = describe_machine(gpu_stats(), cpu_stats())
        self.app.call_from_thread(self._show_machine, text)

    def _show_machine(self, text: str) -> None:
        if text != self.machine:
            self.machine = text
            self.query_one("#machine-stats", Static).update(text)

    def show_run_memory(self, allocated: Series, peak: Series) -> None:
        """The run's memory per step (GPU runs only: CPU runs log none, and the chart stays hidden)."""
        chart = self.query_one("#run-memory", LossChart)
        chart.display = bool(allocated.steps or peak.steps)
        gigabytes = 1 / 1024**3  # as format_bytes and nvidia-smi count
        chart.show_curves(
            [
                Curve("allocated", tuple(allocated.steps), tuple(v * gigabytes for v in allocated.values), "cyan"),
                Curve("peak", tuple(peak.steps), tuple(v * gigabytes for v in peak.values), "orange"),
            ]
        )
