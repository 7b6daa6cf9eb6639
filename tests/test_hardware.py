"""Hardware stats never raise for want of a driver."""

import pynvml

from studio import hardware


def test_no_nvml_reads_as_no_gpu(monkeypatch):
    def missing():
        raise pynvml.NVMLError_LibraryNotFound()

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    assert hardware.gpu_count() == 0
    assert hardware.gpu_stats() == []


def test_cpu_stats_are_sane():
    stats = hardware.cpu_stats()
    assert stats.cores >= 1 and 0 <= stats.utilization <= 100
    assert 0 < stats.ram_used <= stats.ram_total


def test_peak_flops_table_matches_names():
    assert hardware.gpu_peak_flops("NVIDIA H100 80GB HBM3", half_precision=True) == 989e12
    assert hardware.gpu_peak_flops("Mystery Accelerator", half_precision=True) is None
