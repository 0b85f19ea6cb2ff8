"""GPU utilization and memory of a run, with MLflow's own system-metrics logging.

A run that trains on a CUDA GPU starts MLflow's
:class:`~mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`
on its run id (the client API has no active run for MLflow's global switch to
act on): a thread samples every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``
seconds (5 unless set) and logs ``system/gpu_0_utilization_percentage``,
``system/gpu_0_memory_usage_megabytes`` and ``..._percentage`` with a step
per sample, which the MLflow UI shows in the run's "System metrics" tab.

Only the GPUs this process sees are watched, named as the trial sees them
(``gpu_0`` is ``cuda:0``, whatever its number on the machine): MLflow's own
GPU monitor would log every GPU of the machine for every trial, and with
workers pinned by ``CUDA_VISIBLE_DEVICES`` those are mostly other trials'.
Utilization and memory are the device's, so trials sharing a GPU
(``search.trials_per_gpu``) see each other's load; a trial's own peak is the
``gpu_peak_memory_mb`` metric. Nothing runs, and nothing is logged, for a run
on the CPU. Needs ``nvidia-ml-py`` and ``psutil`` (MLflow's monitor imports
it); without them a run logs a warning once and goes on.
"""

from __future__ import annotations

import logging
import os
from typing import Any

_log = logging.getLogger("hpstudy")
SAMPLING_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
DEFAULT_INTERVAL_S = 5.0  # seconds between samples: a few per trial, little load on the store
_warned = False


def visible_gpu_handles() -> list[Any]:
    """NVML handles of the CUDA devices this process sees, in CUDA's order (``cuda:0`` first).

    Matched by UUID: ``CUDA_VISIBLE_DEVICES`` numbers follow CUDA's device
    order, which need not be NVML's (PCI bus) order.
    """
    import pynvml
    import torch

    pynvml.nvmlInit()
    handles = []
    for i in range(torch.cuda.device_count()):
        uuid = str(torch.cuda.get_device_properties(i).uuid)
        for name in (uuid, f"GPU-{uuid}"):
            try:
                handles.append(pynvml.nvmlDeviceGetHandleByUUID(name))
                break
            except pynvml.NVMLError:
                continue
    return handles


def _gpu_monitor_class() -> type:
    from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

    class VisibleGPUMonitor(BaseMetricsMonitor):
        """Utilization and memory of the GPUs this process sees (MLflow's metric names)."""

        def __init__(self, handles: list[Any]):
            super().__init__()
            self.handles = handles

        def collect_metrics(self) -> None:
            import pynvml

            for i, h in enumerate(self.handles):
                try:
                    mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                    util = pynvml.nvmlDeviceGetUtilizationRates(h)
                except pynvml.NVMLError as e:
                    _log.debug("NVML sample failed: %s", e)
                    continue
                self._metrics[f"gpu_{i}_utilization_percentage"].append(float(util.gpu))
                self._metrics[f"gpu_{i}_memory_usage_megabytes"].append(mem.used / 1e6)
                self._metrics[f"gpu_{i}_memory_usage_percentage"].append(
                    100.0 * mem.used / mem.total)

        def aggregate_metrics(self) -> dict[str, float]:
            return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items() if v}

    return VisibleGPUMonitor


def start_gpu_monitor(run_id: str, tracking_uri: str) -> Any | None:
    """Start logging this process's GPUs to ``run_id``; the monitor (call ``finish()``), or None.

    None, with one warning per process, when NVML, psutil or a visible GPU is missing.
    """
    global _warned
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        handles = visible_gpu_handles()
        if not handles:
            raise RuntimeError("no visible GPU found through NVML")
        interval = float(os.environ.get(SAMPLING_ENV) or DEFAULT_INTERVAL_S)
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval,
                                       tracking_uri=tracking_uri)
        monitor.monitors = [_gpu_monitor_class()(handles)]  # this process's GPUs only
        monitor.start()
        return monitor
    except Exception as e:  # noqa: BLE001 - metrics are a nicety; the trial goes on
        if not _warned:
            _warned = True
            _log.warning("GPU metrics are not logged: %s: %s", type(e).__name__, e)
        return None
