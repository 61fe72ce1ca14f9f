"""Facts about a run that reports need: the machine, the command-line overrides."""

from __future__ import annotations

import os
import platform

import torch


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


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_extra_ddp_process() -> bool:
    """True in the processes Lightning starts for ranks 1.. of a local DDP run (it sets
    LOCAL_RANK for them), and in the non-zero ranks of torchrun or SLURM launches."""
    return os.environ.get("LOCAL_RANK", "0") != "0"
