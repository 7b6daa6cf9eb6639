"""What the machine has and how busy it is: GPUs through NVML (nvidia-ml-py), CPU and RAM through psutil.

Torch-free, so the studio can poll it. Any NVML failure (no driver, no library, a GPU that vanished) reads
as "no GPU" or "N/A": this module never raises for want of a driver.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import psutil


@dataclass
class GpuStats:
    index: int
    name: str
    utilization: float | None  # percent
    memory_used: int  # bytes
    memory_total: int
    temperature: float | None  # degrees C
    power: float | None  # watts
    power_limit: float | None


@dataclass
class CpuStats:
    cores: int
    utilization: float  # percent, all cores
    ram_used: int  # bytes
    ram_total: int


def _nvml():
    """The initialised pynvml module, or None when there is no usable NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError...: all mean "no GPU"
        return None


def gpu_count() -> int:
    nvml = _nvml()
    if nvml is None:
        return 0
    try:
        return nvml.nvmlDeviceGetCount()
    except Exception:
        return 0


def gpu_stats() -> list[GpuStats]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception:
        return []
    return [stats for stats in (_gpu(nvml, index) for index in range(count)) if stats is not None]


def _gpu(nvml, index: int) -> GpuStats | None:
    """One GPU's stats; None when it cannot be read at all, N/A (None) for any reading that fails."""
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
    except Exception:
        return None
    return GpuStats(
        index=index,
        name=name.decode() if isinstance(name, bytes) else name,
        utilization=_maybe(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        memory_used=memory.used,
        memory_total=memory.total,
        temperature=_maybe(lambda: _temperature(nvml, handle)),
        power=_maybe(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
        power_limit=_maybe(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
    )


def _temperature(nvml, handle) -> float:
    sensor = nvml.NVML_TEMPERATURE_GPU
    if hasattr(nvml, "nvmlDeviceGetTemperatureV"):  # the older call is deprecated since CUDA 13
        return nvml.nvmlDeviceGetTemperatureV(handle, sensor)
    return nvml.nvmlDeviceGetTemperature(handle, sensor)


def _maybe(read):
    try:
        return read()
    except Exception:
        return None


def process_memory(pid: int) -> int | None:
    """Resident memory (bytes) of a process and its children (a launcher and its workers), or None when gone."""
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return None


def peak_resident_bytes(pid: int | str = "self") -> int | None:
    """A process's peak resident set in bytes since it started its program: the kernel's high-water mark of its
    memory (VmHWM in /proc), which catches the peak inside a step that a sampled RSS would miss. None where there is
    no /proc or the process is gone. (getrusage's ru_maxrss would not do: Linux carries a process's high-water mark
    over fork and exec, so a trainer started from a large process would report its parent's size.)"""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # in kB
    except OSError:
        pass
    return None


def cpu_stats() -> CpuStats:
    memory = psutil.virtual_memory()
    return CpuStats(
        cores=os.cpu_count() or 1,
        utilization=psutil.cpu_percent(interval=None),
        ram_used=memory.total - memory.available,
        ram_total=memory.total,
    )


# Dense peak throughput (FLOP/s) by GPU name, for the MFU estimate: (bf16/fp16 tensor cores, fp32).
GPU_PEAK_FLOPS = {
    "H200": (989e12, 67e12),
    "H100": (989e12, 67e12),
    "A100": (312e12, 19.5e12),
    "L40S": (362e12, 91.6e12),
    "A10": (125e12, 31.2e12),
    "RTX 4090": (165e12, 82.6e12),
    "RTX 3090": (71e12, 35.6e12),
    "V100": (125e12, 15.7e12),
    "T4": (65e12, 8.1e12),
}


def gpu_peak_flops(name: str, half_precision: bool) -> float | None:
    for key, (half, full) in GPU_PEAK_FLOPS.items():
        if key in name:
            return half if half_precision else full
    return None


def cpu_name() -> str:
    """The CPU's model name: Linux's /proc/cpuinfo, elsewhere what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
