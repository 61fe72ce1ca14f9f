"""The machine a command runs on: which device it uses, and how reports name it."""

from __future__ import annotations

import os
import platform

import torch

from cnnlab.errors import ConfigError


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(accelerator_device: torch.device | None = None) -> str:
    """'NVIDIA H100 80GB HBM3' on a GPU run, '<CPU model> (N cores)' on a CPU run."""
    if accelerator_device is not None and accelerator_device.type == "cuda":
        return torch.cuda.get_device_name(accelerator_device)
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def gpu_available(accelerator: str = "gpu") -> bool:
    """Whether Lightning's ``accelerator`` ("gpu": CUDA or Apple's MPS; "cuda") has a device."""
    if torch.cuda.is_available():
        return True
    return accelerator == "gpu" and torch.backends.mps.is_available()


def pick_device(name: str) -> torch.device:
    """The ``device=`` option of the analysis commands: auto (a CUDA GPU if there is one), cpu,
    cuda, ..."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name} is not a device; use device=auto, cpu, cuda or cuda:<index>"
        ) from None
