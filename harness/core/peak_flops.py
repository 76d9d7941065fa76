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
from gpt_conformance.harness.core.targets import DEVICE_MARKERS


@dataclass(frozen=True)
class PeakFlops:
    flops: float
    source: str


# The compute classes of a GPU peak: "fp32" (CUDA cores: IEEE float32, what eager-cuda and the
# fp32 targets ask for), "tf32" and "16-bit" (tensor cores; fp16 and bf16 have the same peak).
COMPUTE_CLASSES = ("fp32", "tf32", "16-bit")


def _gpu(name: str, fp32: float, tf32_sparse: float, bf16_sparse: float, datasheet: str) -> dict[str, PeakFlops]:
    """A GPU's dense peaks in TFLOPS. Datasheets print tensor-core figures with 2:4 structured
    sparsity, twice the dense rate our models run at, so those are halved."""
    source = f"NVIDIA {datasheet} datasheet, {name}"
    return {"fp32": PeakFlops(fp32 * 1e12, f"{source}, FP32 {fp32:g} TFLOPS"),
            "tf32": PeakFlops(tf32_sparse / 2 * 1e12, f"{source}, TF32 tensor core {tf32_sparse:g} sparse / 2"),
            "16-bit": PeakFlops(bf16_sparse / 2 * 1e12, f"{source}, BF16/FP16 tensor core {bf16_sparse:g} sparse / 2")}


# Matched by substring of torch.cuda.get_device_name(), first match wins: the more specific names
# first ("NVIDIA H100 PCIe" before "H100"; the SXM parts are named "NVIDIA H100 80GB HBM3" and
# "NVIDIA H200"). Figures from NVIDIA's datasheets: "NVIDIA A100 Tensor Core GPU" (FP32 19.5, TF32
# 312 and BF16 624 with sparsity), "NVIDIA H100 Tensor Core GPU" (SXM: 67, 989, 1,979; PCIe: 51,
# 756, 1,513; NVL: 60, 835, 1,671) and "NVIDIA H200 Tensor Core GPU" (SXM: 67, 989, 1,979; NVL: 60,
# 835, 1,671).
GPU_TABLE: tuple[tuple[str, dict[str, PeakFlops]], ...] = (
    ("H100 PCIe", _gpu("H100 PCIe", 51, 756, 1513, "H100 Tensor Core GPU")),
    ("H100 NVL", _gpu("H100 NVL", 60, 835, 1671, "H100 Tensor Core GPU")),
    ("H100", _gpu("H100 SXM", 67, 989, 1979, "H100 Tensor Core GPU")),
    ("H200 NVL", _gpu("H200 NVL", 60, 835, 1671, "H200 Tensor Core GPU")),
    ("H200", _gpu("H200 SXM", 67, 989, 1979, "H200 Tensor Core GPU")),
    ("A100", _gpu("A100", 19.5, 312, 624, "A100 Tensor Core GPU")),
)
# trn1: one NeuronCore-v2, the unit torch_neuronx.trace runs on. AWS Neuron docs, "Trainium
#   Architecture": each Trainium chip is two NeuronCore-v2 delivering 190 FP16/BF16 TFLOPS, so 95
#   per core (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/arch/neuron-hardware/trainium.html).
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


def gpu_peak(device_name: str, compute: str = "16-bit") -> PeakFlops | None:
    """The datasheet peak of the GPU called ``device_name`` for a ``compute`` class; None if unknown."""
    if compute not in COMPUTE_CLASSES:
        raise ValueError(f"compute class {compute!r}: expected one of {COMPUTE_CLASSES}")
    for key, peaks in GPU_TABLE:
        if key.lower() in device_name.lower():
            return peaks[compute]
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


def peak_for(device: str, overrides: dict[str, float], compute: str = "16-bit") -> PeakFlops | None:
    """Peak FLOP/s of a target's device ("cpu", "cuda", "neuron"); None if nothing is known. On a
    GPU, ``compute`` picks the datasheet figure: "fp32", "tf32" or "16-bit" (``COMPUTE_CLASSES``)."""
    for key in (device, "*"):
        if key in overrides:
            return PeakFlops(overrides[key], f"--peak-flops {key}={overrides[key]:g} (user)")
    if device == "cpu":
        return cpu_peak()
    if device == "neuron":
        return TRN1_NEURONCORE_V2
    if device == "cuda" and torch.cuda.is_available():
        return gpu_peak(torch.cuda.get_device_name(), compute)
    return None
