"""Roofline model per layer: is a layer limited by the machine's arithmetic or by its memory
bandwidth?

A layer doing ``F`` FLOPs while moving ``B`` bytes (weights + input + output) has arithmetic
intensity ``I = F / B``. On a machine with peak ``P`` FLOP/s and bandwidth ``W`` bytes/s it can
reach at most ``min(P, I * W)`` FLOP/s: below the ridge point ``I = P / W`` it waits for memory
(bandwidth-bound), above it for the arithmetic units (compute-bound). ``P`` and ``W`` are given
or measured here with a short float32 matmul and a large copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cnnlab.analysis.layers import LayerStats, nbytes

# Sizes of the measuring kernels: big enough to reach the peak, small enough to take well under
# a second (CPU) or a few milliseconds (GPU).
MATMUL_SIZE = {"cpu": 1024, "cuda": 8192}
COPY_BYTES = {"cpu": 256 * 2**20, "cuda": 2 * 2**30}
REPEATS = 5


@dataclass
class Machine:
    device: str
    peak_flops: float  # FLOP/s
    bandwidth: float  # bytes/s
    peak_flops_source: str  # "measured" | "given"
    bandwidth_source: str

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte above which a layer is compute-bound."""
        return self.peak_flops / self.bandwidth

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ridge_point": round(self.ridge_point, 2)}


def _best_seconds(fn: Callable[[], object], device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up: first-call allocations, kernel selection
    sync()
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peak_flops(device: torch.device) -> float:
    """FLOP/s of a square float32 matmul (best of a few runs)."""
    n = MATMUL_SIZE.get(device.type, MATMUL_SIZE["cpu"])
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    seconds = _best_seconds(lambda: torch.matmul(a, b, out=out), device)
    return 2 * n**3 / seconds


def measure_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy, counting the read and the write."""
    size = COPY_BYTES.get(device.type, COPY_BYTES["cpu"]) // 4
    src = torch.ones(size, device=device)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), device)
    return 2 * nbytes(src) / seconds


def machine(
    device: torch.device, peak_gflops: float | None = None, bandwidth_gbs: float | None = None
) -> Machine:
    """The machine's peak FLOP/s and bandwidth: given values, or measured on ``device``."""
    peak = peak_gflops * 1e9 if peak_gflops else measure_peak_flops(device)
    bandwidth = bandwidth_gbs * 1e9 if bandwidth_gbs else measure_bandwidth(device)
    return Machine(
        device=str(device),
        peak_flops=peak,
        bandwidth=bandwidth,
        peak_flops_source="given" if peak_gflops else "measured",
        bandwidth_source="given" if bandwidth_gbs else "measured",
    )


@dataclass
class RooflineRow:
    name: str
    type: str
    flops: int  # per batch
    bytes_moved: int  # per batch
    arithmetic_intensity: float
    bound: str  # "compute" | "memory"
    attainable_flops: float  # FLOP/s
    seconds: float  # lower bound: max(F / P, B / W)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roofline(layers: list[LayerStats], machine: Machine) -> list[RooflineRow]:
    """Classify every layer that ran. A layer with no counted FLOPs (activation, pooling, batch
    norm: elementwise work) only streams memory, so it is bandwidth-bound."""
    rows = []
    for layer in layers:
        if layer.output_shape is None:
            continue
        intensity = layer.arithmetic_intensity
        rows.append(
            RooflineRow(
                name=layer.name,
                type=layer.type,
                flops=layer.flops,
                bytes_moved=layer.bytes_moved,
                arithmetic_intensity=intensity,
                bound="compute" if intensity >= machine.ridge_point else "memory",
                attainable_flops=min(machine.peak_flops, intensity * machine.bandwidth),
                seconds=max(
                    layer.flops / machine.peak_flops, layer.bytes_moved / machine.bandwidth
                ),
            )
        )
    return rows


def summary(rows: list[RooflineRow], batch_size: int) -> dict[str, Any]:
    """How the roofline's lower-bound time of one forward pass splits between the two kinds."""
    total = sum(r.seconds for r in rows)
    compute = sum(r.seconds for r in rows if r.bound == "compute")
    return {
        "forward_seconds_per_batch": total,
        "compute_bound_layers": sum(1 for r in rows if r.bound == "compute"),
        "memory_bound_layers": sum(1 for r in rows if r.bound == "memory"),
        "compute_bound_time_share": compute / total if total else 0.0,
        "images_per_s_upper_bound": batch_size / total if total else 0.0,
    }
