"""torch on an NVIDIA GPU: the reference GPT eager and compiled by inductor, the gpu tier's PyTorch
side, judged beside the Tripy targets in the same run and report.

================ ========= ====== ============================================ ==============
target           dtype     TF32   runs                                         policy
================ ========= ====== ============================================ ==============
eager-cuda       float32   off    the reference, eager                         fp32-compiled
eager-cuda-tf32  float32   on     the reference, eager                         tf32 (below)
eager-cuda-fp16  float16   off    the reference cast to float16                fp16
eager-cuda-bf16  bfloat16  off    the reference cast to bfloat16               bf16
inductor-cuda    float32   off    torch.compile(backend="inductor"): Triton    fp32-compiled
================ ========= ====== ============================================ ==============

Both fp32 targets are ``fp32-compiled``: on the GPU even eager computes with kernels of its own
(cuBLAS's reduction orders, CUDA's own exp and erf), not CPU eager's arithmetic. Measured on an H200
(torch 2.11, CUDA 13.0), on the property models of 4 layers with weights of std 1.0: eager-cuda at
4.03x CPU eager's max_abs and 3.49x its rmse, inductor-cuda at 3.13x and 2.74x, where fp32 allows
2x and fp32-reassoc 3x rmse; on the named cases both stay within 1.94x (docs/sources.md#fp32-classes).

TF32 is set for each call and restored after it (``gpt_conformance.targets.devices.tf32``): torch's flags are
process-wide, and eager-cuda and eager-cuda-tf32 run in one process. Outputs come back to the
CPU, where the harness judges them. Each target runs on its ``torch_device``, "cuda"; the tests
build them on "cpu" to run everything but the GPU itself.
"""

from __future__ import annotations

import torch
from gpt_conformance.harness.api import (
    ALL_FAMILIES,
    AVAILABLE,
    Availability,
    Capabilities,
    Gate,
    Requirements,
    Runnable,
    Target,
    TolerancePolicy,
    register_policy,
)
from gpt_conformance.harness.core.policies import FP32_RTOL, ORIGINAL_LOSS_ATOL
from gpt_conformance.harness.core.probes import probe_cuda, probe_package
from gpt_conformance.harness.core.quant import LowPrecision
from gpt_conformance.reference.families import family_of
from gpt_conformance.targets.devices import on_device, outputs_to_cpu, tf32
from gpt_conformance.targets.inductor import InductorTarget

# --- the tf32 policy -------------------------------------------------------------------------
# TF32 (NVIDIA, "TensorFloat-32 in the A100 GPU Accelerates AI Training, HPC up to 20x", 2020, and
# the "NVIDIA A100 Tensor Core GPU Architecture" whitepaper): a matmul's float32 operands are
# rounded to a 10-bit mantissa (fp16's) with fp32's 8-bit exponent, and the products are summed in
# float32. Unit roundoff 2^-11 instead of fp32's 2^-24: 2^13 times larger, for the matmul operands
# only; LayerNorm, softmax, GELU, residual adds and the accumulation keep fp32's. So the error
# against fp64 is at most 2^13 times eager fp32's (equality if matmul operands caused all of it).
# docs/sources.md#tf32 has the derivation and a CPU emulation of TF32's rounding on the named
# cases: 631..1608x eager's error (round to nearest), 2025..4449x if the hardware truncated.
TF32_ROUNDOFF_RATIO = 2.0 ** 13  # 2^-11 / 2^-24
TF32_REASON = ("2^13 x eager fp32's error + fp32's rtol floor: TF32 rounds matmul operands to a 10-bit mantissa, "
               "unit roundoff 2^-11 vs fp32's 2^-24 (NVIDIA's TF32 description), everything else stays fp32; "
               "CPU emulation on the named cases <= 1608x (round to nearest), <= 4449x (truncation); "
               "docs/sources.md#tf32")

register_policy(TolerancePolicy(
    name="tf32",
    description="float32 tensors with TF32 matmuls (eager-cuda-tf32): bounds scaled from fp32's by TF32's unit roundoff",
    logit_gates=(
        Gate("rmse", multiplier=TF32_ROUNDOFF_RATIO, floor_rel=FP32_RTOL, reason=TF32_REASON),
        Gate("max_abs", multiplier=TF32_ROUNDOFF_RATIO, floor_rel=FP32_RTOL, reason=TF32_REASON),
    ),
    loss_gates=(Gate("loss_abs", multiplier=TF32_ROUNDOFF_RATIO, floor_abs=ORIGINAL_LOSS_ATOL, plus_logit_rmse=True,
                     reason="2^13 x eager fp32's loss error and logit rmse (TF32's unit roundoff over fp32's) + the "
                            "original export check's 1e-5; CPU emulation on the named cases <= 484x; "
                            "docs/sources.md#tf32"),),
    # TF32 rounds matmul operands to fp16's mantissa and nothing else, so fp16's margin bounds it.
    greedy_margin=0.02,  # NxD Inference's fp16 divergence tolerance (docs/sources.md#nxd-inference-greedy-divergence-tolerances)
))

# --- the targets -----------------------------------------------------------------------------
# TF32 and bf16 tensor cores arrive with Ampere, compute capability 8.0 (NVIDIA A100 Tensor Core GPU
# Architecture whitepaper): before it, the TF32 flag changes nothing and eager-cuda-tf32 would be
# eager-cuda again. Triton, inductor's GPU backend, needs 7.0 (torch._inductor.exc.GPUTooOldForTriton).
AMPERE = (8, 0)
TRITON_MIN_CAPABILITY = (7, 0)


def cuda_environment(torch_device: str) -> dict:
    """The GPU, the CUDA torch was built with, and torch's defaults for 16-bit matmul sums (cuBLAS
    may sum fp16/bf16 products in reduced precision unless these are off); nothing here
    initialises CUDA on a CPU machine."""
    on_gpu = torch_device == "cuda" and torch.cuda.is_available()
    matmul = torch.backends.cuda.matmul
    return {"torch_device": torch_device, "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name() if on_gpu else None,
            "fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
            "bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction}


class EagerCudaTarget(Target):
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)

    def __init__(self, name: str, precision: str, dtype: torch.dtype = torch.float32, allow_tf32: bool = False,
                 min_capability: tuple[int, int] | None = None, torch_device: str = "cuda"):
        self.name = name
        self.precision = precision
        self.dtype = dtype
        self.allow_tf32 = allow_tf32
        self.torch_device = torch_device
        self.requirements = Requirements(device="cuda", min_cuda_capability=min_capability)
        cast = "" if dtype == torch.float32 else f" cast to {dtype}"
        self.description = f"the reference GPT{cast} on CUDA, eager, TF32 {'on' if allow_tf32 else 'off'}"
        if dtype != torch.float32:
            # The two-level checks: arithmetic against the reference in this dtype on the CPU.
            self.low_precision = LowPrecision(dtype)

    def prepare(self, model: torch.nn.Module, config: object) -> Runnable:
        device_model = on_device(model, self.torch_device, self.dtype)
        family = family_of(model.config)

        def run(idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
            idx = idx.to(self.torch_device)
            targets = None if targets is None else targets.to(self.torch_device)
            with tf32(self.allow_tf32):
                out = family.logits_and_loss(device_model, idx, targets)
            return outputs_to_cpu(out)

        return run

    def environment(self) -> dict:
        return {**cuda_environment(self.torch_device), "dtype": str(self.dtype), "allow_tf32": self.allow_tf32}


class InductorCudaTarget(InductorTarget):
    """``inductor`` on the GPU: Triton kernels, TF32 off (set for each call, the first compiles)."""

    name = "inductor-cuda"
    # Triton's kernels and CUDA's libdevice exp and erf: a compiler with kernels of its own (module docstring).
    precision = "fp32-compiled"
    description = 'torch.compile(backend="inductor", fullgraph=True) on CUDA (Triton kernels), TF32 off'
    requirements = Requirements(packages=(("triton", None),), device="cuda", min_cuda_capability=TRITON_MIN_CAPABILITY)

    def __init__(self, torch_device: str = "cuda") -> None:
        super().__init__()
        self.torch_device = torch_device

    def probe(self) -> Availability:
        """Every failed check, named: the GPU and Triton (not the C++ compiler the CPU backend needs)."""
        checks = [probe_cuda(self.requirements.min_cuda_capability), probe_package("triton")]
        failed = [check.reason for check in checks if not check]
        return Availability(False, "; ".join(failed)) if failed else AVAILABLE

    def prepare(self, model: torch.nn.Module, config: object) -> Runnable:
        run = super().prepare(model, config)

        def run_tf32_off(idx: torch.Tensor, targets: torch.Tensor | None = None):
            with tf32(False):
                return run(idx, targets)

        return run_tf32_off

    def environment(self) -> dict:
        return {**super().environment(), **cuda_environment(self.torch_device), "allow_tf32": False}


TARGETS = [
    EagerCudaTarget("eager-cuda", "fp32-compiled"),
    EagerCudaTarget("eager-cuda-tf32", "tf32", allow_tf32=True, min_capability=AMPERE),
    EagerCudaTarget("eager-cuda-fp16", "fp16", torch.float16),
    EagerCudaTarget("eager-cuda-bf16", "bf16", torch.bfloat16, min_capability=AMPERE),
    InductorCudaTarget(),
]
