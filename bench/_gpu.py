"""What the prepared GPU checks (``bench/gpu_*.py``) share: nvidia-smi sampled while a block runs
(mean utilisation, peak memory used), PyTorch's peak allocation, and a results file written after
every measurement, so a run cut short by the device's time limit still returns what it measured.
Needs nothing beyond the standard library and, where asked, torch."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class GpuSampler:
    """nvidia-smi every ``every`` seconds while the block runs: ``util`` (mean %, None without
    nvidia-smi) and ``memory_mib`` (the most the GPU had in use)."""

    def __init__(self, every: float = 0.2):
        self.every = every

    def __enter__(self):
        self.util_samples, self.mem_samples, self._stop = [], [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.wait(self.every):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                     timeout=5).stdout.split(",")
                self.util_samples.append(float(out[0]))
                self.mem_samples.append(float(out[1]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return

    @property
    def util(self):
        return round(sum(self.util_samples) / len(self.util_samples), 1) if self.util_samples else None

    @property
    def memory_mib(self):
        return max(self.mem_samples) if self.mem_samples else None


def torch_peak_gib(reset: bool = True):
    """PyTorch's peak GPU allocation since the last reset, in GiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Results:
    """A JSON results file under ``$OUT`` (else bench/), rewritten after every ``add``."""

    def __init__(self, name: str, info: dict):
        self.path = Path(os.environ.get("OUT") or REPO / "bench") / name
        self.data = dict(info, results=[])

    def add(self, row: dict) -> None:
        self.data["results"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")
