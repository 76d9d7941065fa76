"""Core layer: peak FLOP/s per device, the denominator of MFU, each with the label of where it came from.

The user's ``--peak-flops`` always wins. Otherwise a small table of datasheet figures, and for a
CPU an *estimate* from its cores, clock and SIMD width, labelled as such: no datasheet gives a
laptop's sustained peak, so CPU MFU is a rough figure to compare runs on one machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

import torch

from harness.core.targets import DEVICE_MARKERS


@dataclass(frozen=True)
class PeakFlops:
    flops: float
    source: str


# Dense (no structured sparsity) tensor-core figures; our GPU targets run in fp16/bf16.
# A100: NVIDIA A100 datasheet, BF16 tensor core 312 TFLOPS (624 with sparsity).
# H100/H200 SXM: NVIDIA H100 datasheet, BF16 tensor core 1,979 TFLOPS *with sparsity*, so
#   989 dense; H200 has the same compute as H100 SXM. H100 PCIe: 1,513 sparse, 756 dense.
# trn1: one NeuronCore-v2, the unit torch_neuronx.trace runs on. AWS Neuron docs, "Trainium
#   Architecture": each Trainium chip is two NeuronCore-v2 delivering 190 FP16/BF16 TFLOPS, so 95
#   per core (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/arch/neuron-hardware/trainium.html).
GPU_TABLE: tuple[tuple[str, PeakFlops], ...] = (
    ("H100 PCIe", PeakFlops(756e12, "NVIDIA H100 PCIe datasheet, bf16 dense")),
    ("H100", PeakFlops(989e12, "NVIDIA H100 SXM datasheet, bf16 dense")),
    ("H200", PeakFlops(989e12, "NVIDIA H200 (H100 SXM compute) datasheet, bf16 dense")),
    ("A100", PeakFlops(312e12, "NVIDIA A100 datasheet, bf16 dense")),
)
TRN1_NEURONCORE_V2 = PeakFlops(95e12, "AWS Trainium docs: 190 bf16 TFLOPS per chip / 2 NeuronCore-v2")

# FMA units per core are not in /proc/cpuinfo; 2 is right for most x86 server and desktop cores
# since Haswell/Zen 2 (some AVX-512 parts have 1), so the estimate may be up to 2x off.
ASSUMED_FMA_UNITS = 2


def fp32_lanes(flags: set[str]) -> tuple[int, str]:
    """fp32 SIMD lanes of the widest vector unit named by /proc/cpuinfo flags, and its name."""
    if "avx512f" in flags:
        return 16, "avx512"
    if "avx2" in flags or "avx" in flags:
        return 8, "avx2" if "avx2" in flags else "avx"
    if "asimd" in flags or "sse2" in flags:
        return 4, "neon" if "asimd" in flags else "sse2"
    return 1, "scalar"


def cpu_peak_estimate(cores: int, ghz: float, flags: set[str], fma_units: int = ASSUMED_FMA_UNITS) -> PeakFlops:
    """cores x GHz x fp32 lanes x 2 (an FMA is a multiply and an add) x FMA units."""
    lanes, unit = fp32_lanes(flags)
    has_fma = "fma" in flags or "asimd" in flags or "avx512f" in flags
    per_cycle = lanes * (2 if has_fma else 1) * fma_units
    label = (f"estimate: {cores} cores x {ghz:.2f} GHz x {lanes} fp32 lanes ({unit})"
             f" x {2 if has_fma else 1} (FMA) x {fma_units} units (assumed), fp32")
    return PeakFlops(cores * ghz * 1e9 * per_cycle, label)


def parse_cpuinfo(text: str) -> tuple[set[str], float | None, int | None]:
    """(flags, GHz, threads per core) from /proc/cpuinfo text; None where it does not say."""
    flags: set[str] = set()
    ghz = None
    siblings = cores = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "model name" and ghz is None:
            match = re.search(r"@\s*([\d.]+)\s*GHz", value)
            ghz = float(match.group(1)) if match else None
        elif key == "cpu MHz" and ghz is None:
            ghz = float(value) / 1000
        elif key == "siblings" and siblings is None:
            siblings = int(value)
        elif key == "cpu cores" and cores is None:
            cores = int(value)
    threads_per_core = siblings // cores if siblings and cores else None
    return flags, ghz, threads_per_core


@lru_cache(maxsize=1)
def cpu_peak() -> PeakFlops:
    """This machine's estimated fp32 peak over the cores this process may use."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags, ghz, threads_per_core = parse_cpuinfo(fh.read())
    except OSError:
        flags, ghz, threads_per_core = set(), None, None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, logical // (threads_per_core or 1))
    if ghz is None:
        ghz = 3.0
        estimate = cpu_peak_estimate(cores, ghz, flags)
        return PeakFlops(estimate.flops, estimate.source + " (clock unknown: 3 GHz assumed)")
    return cpu_peak_estimate(cores, ghz, flags)


def gpu_peak(device_name: str) -> PeakFlops | None:
    for key, peak in GPU_TABLE:
        if key.lower() in device_name.lower():
            return peak
    return None


def parse_peak_option(values: list[str]) -> dict[str, float]:
    """``--peak-flops`` values, each ``FLOPS`` (every device) or ``DEVICE=FLOPS`` with DEVICE a
    device kind of ``Requirements.device``, into {device or "*": FLOP/s}; bad input raises
    ValueError naming it."""
    parsed: dict[str, float] = {}
    for raw in values:
        device, sep, number = raw.rpartition("=")
        device = device.strip() if sep else "*"
        if sep and device not in DEVICE_MARKERS:
            # A typo'd kind would never match a target, and MFU would silently use the default peak.
            raise ValueError(f"--peak-flops {raw!r}: unknown device kind {device!r}; known: "
                             f"{', '.join(sorted(DEVICE_MARKERS))}")
        try:
            flops = float(number)
        except ValueError:
            raise ValueError(f"--peak-flops {raw!r}: expected FLOPS or DEVICE=FLOPS, e.g. 989e12 or cuda=989e12") from None
        if not flops > 0 or flops == float("inf"):
            raise ValueError(f"--peak-flops {raw!r}: peak FLOP/s must be a positive finite number")
        parsed[device] = flops
    return parsed


def peak_for(device: str, overrides: dict[str, float]) -> PeakFlops | None:
    """Peak FLOP/s of a target's device ("cpu", "cuda", "neuron"); None if nothing is known."""
    for key in (device, "*"):
        if key in overrides:
            return PeakFlops(overrides[key], f"--peak-flops {key}={overrides[key]:g} (user)")
    if device == "cpu":
        return cpu_peak()
    if device == "neuron":
        return TRN1_NEURONCORE_V2
    if device == "cuda" and torch.cuda.is_available():
        return gpu_peak(torch.cuda.get_device_name())
    return None
