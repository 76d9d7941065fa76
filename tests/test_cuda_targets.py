"""The torch CUDA targets (``targets/cuda.py``) checked without a GPU: registration, tier marker,
probes and skip reasons; the targets' code run with ``torch_device="cpu"`` (everything but the
GPU itself: device copies, TF32 set and restored around each call, outputs back on the CPU); the
``tf32`` policy against fp32's and bf16's, and against TF32's rounding emulated on the CPU; and
the latency tier synchronising a CUDA target's rounds."""

from __future__ import annotations

import copy
from importlib import metadata
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts, run_checked
from gpt_conformance.harness.checks.latency import PROFILES, LatencyRun, LatencySettings, peak_compute
from gpt_conformance.harness.checks.precision import low_precision_of, output_arithmetic_verdicts
from gpt_conformance.harness.core.metrics import logit_metrics
from gpt_conformance.harness.core.policies import get_policy
from gpt_conformance.harness.report.matrix import build_matrix
from gpt_conformance.reference.cases import named_case
from gpt_conformance.reference.goldens import load_golden
from gpt_conformance.targets import cuda, lowp, tripy
from gpt_conformance.targets.devices import tf32
from torch.overrides import TorchFunctionMode

NAMES = ["eager-cuda", "eager-cuda-tf32", "eager-cuda-fp16", "eager-cuda-bf16", "inductor-cuda"]
TARGETS = {t.name: t for t in cuda.TARGETS}


def tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


# --- registration, tier, probes --------------------------------------------------------------

def test_targets_are_registered_gpu_targets():
    assert {ep.name for ep in metadata.entry_points(group="gpt_conformance.targets")} >= {"cuda"}
    assert sorted(TARGETS) == sorted(NAMES)
    assert {n: TARGETS[n].precision for n in NAMES} == {
        "eager-cuda": "fp32-compiled", "eager-cuda-tf32": "tf32", "eager-cuda-fp16": "fp16", "eager-cuda-bf16": "bf16",
        "inductor-cuda": "fp32-compiled"}
    for target in cuda.TARGETS:
        assert target.marker == "gpu" and target.requirements.device == "cuda", target.name
    assert TARGETS["inductor-cuda"].marks == ("slow",)  # compiles like inductor does
    # TF32 and bf16 tensor cores need Ampere; before it eager-cuda-tf32 would be eager-cuda.
    assert TARGETS["eager-cuda-tf32"].requirements.min_cuda_capability == (8, 0)
    assert TARGETS["eager-cuda-bf16"].requirements.min_cuda_capability == (8, 0)
    assert TARGETS["eager-cuda"].requirements.min_cuda_capability is None
    # The half-precision targets take the two-level checks, against the CPU reference in their dtype.
    for name, dtype in (("eager-cuda-fp16", torch.float16), ("eager-cuda-bf16", torch.bfloat16)):
        declared = low_precision_of(TARGETS[name])
        assert declared.compute_dtype == dtype and not declared.is_arithmetic_reference
    assert low_precision_of(TARGETS["eager-cuda"]) is None and low_precision_of(TARGETS["eager-cuda-tf32"]) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip reasons of a machine without CUDA")
def test_probes_say_why_they_cannot_run_here():
    for target in cuda.TARGETS:
        availability = target.probe()
        assert not availability and "no CUDA device" in availability.reason, target.name
    assert cuda_has_triton() or "'triton' is not importable" in TARGETS["inductor-cuda"].probe().reason


def cuda_has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# --- TF32 set and restored -------------------------------------------------------------------

@pytest.mark.filterwarnings("error")  # torch warns when its legacy and new TF32 APIs are mixed
@pytest.mark.parametrize("enabled", [True, False])
def test_tf32_is_set_inside_and_restored_after(enabled):
    before = tf32_flags()
    with tf32(enabled):
        assert tf32_flags() == (enabled, enabled)
        with tf32(not enabled):
            assert tf32_flags() == (not enabled, not enabled)
        assert tf32_flags() == (enabled, enabled)
    assert tf32_flags() == before
    with pytest.raises(RuntimeError, match="boom"), tf32(enabled):
        raise RuntimeError("boom")
    assert tf32_flags() == before


# --- the targets' code on the CPU ------------------------------------------------------------

def on_cpu(target):
    """The same target with its device "cpu": its code but the GPU."""
    if isinstance(target, cuda.InductorCudaTarget):
        return cuda.InductorCudaTarget(torch_device="cpu")
    return cuda.EagerCudaTarget(target.name, target.precision, target.dtype, target.allow_tf32,
                                target.requirements.min_cuda_capability, torch_device="cpu")


def judged(target, golden):
    runnable = target.prepare(golden.model, golden.model.config)
    logits, loss = run_checked(runnable, target, golden.model.config, golden.idx, golden.targets)
    assert logits.device.type == "cpu"
    if low_precision_of(target) is not None:
        return output_arithmetic_verdicts(target, runnable, golden.model, golden.idx, golden.targets, logits, loss)
    return parity_verdicts(target, Truth(golden.logits64, golden.loss64, golden.logits32, golden.loss32), logits, loss)


@pytest.mark.parametrize("name", NAMES)
def test_target_code_runs_on_cpu(name, monkeypatch):
    """Each target's prepare and call with its device "cpu" (inductor-cuda's torch.compile made the
    identity, so no compile is paid): judged by the harness, TF32 as declared inside every forward
    and as before after it, the caller's model untouched."""
    golden = load_golden(named_case("one-token"))
    target = on_cpu(TARGETS[name])
    if name == "inductor-cuda":
        monkeypatch.setattr(torch, "compile", lambda module, **options: module)
    expected = getattr(target, "allow_tf32", False)
    seen = []
    hook = golden.model.register_forward_pre_hook(lambda module, args: seen.append(tf32_flags()))
    before, dtype = tf32_flags(), golden.model.lm_head.weight.dtype
    try:
        with tf32(not expected):  # the opposite setting around the call: the target must override it
            verdicts = [v for v in judged(target, golden) if v is not None]
    finally:
        hook.remove()
    assert all(v.passed for v in verdicts), "\n".join(v.explain() for v in verdicts)
    assert seen and set(seen) <= {(expected, expected), (not expected, not expected)}
    target_calls = [flags for flags in seen if flags == (expected, expected)]
    assert target_calls, f"{name} never ran with TF32 {'on' if expected else 'off'}: {seen}"
    assert tf32_flags() == before and golden.model.lm_head.weight.dtype == dtype


def test_cpu_device_runs_the_same_arithmetic_as_the_cpu_targets():
    """eager-cuda-fp16 on the CPU computes what eager-fp16 computes: the only difference on a GPU
    is the GPU."""
    golden = load_golden(named_case("no-bias"))
    ours = on_cpu(TARGETS["eager-cuda-fp16"]).prepare(golden.model, golden.model.config)(golden.idx)[0]
    theirs = lowp.TARGETS[0].prepare(golden.model, golden.model.config)(golden.idx)[0]
    assert torch.equal(ours, theirs)


# --- the tf32 policy ---------------------------------------------------------------------------

def bounds(policy_name: str, golden) -> dict[str, float]:
    baseline = logit_metrics(golden.logits32, golden.logits64)
    scale = float(golden.logits64.abs().max())
    return {g.metric: g.bound(baseline.get(g.metric, 0.0), scale) for g in get_policy(policy_name).logit_gates}


@pytest.mark.parametrize("case", ["seed", "full-block"])
def test_tf32_bound_sits_between_fp32_and_bf16(case):
    golden = load_golden(named_case(case))
    fp32, tf32_, bf16 = bounds("fp32", golden), bounds("tf32", golden), bounds("bf16", golden)
    for metric in ("rmse", "max_abs"):
        # Far looser than fp32's (2^13 / 2 times the eager term), tighter than bf16's.
        assert 100 * fp32[metric] < tf32_[metric] < bf16[metric], (metric, fp32, tf32_, bf16)


def round_to_tf32(x: torch.Tensor, truncate: bool = False) -> torch.Tensor:
    """float32 to TF32's 10-bit mantissa (fp32's exponent), kept in float32: round to nearest, ties
    to even, on the 13 dropped bits, or truncate them."""
    bits = x.contiguous().view(torch.int32)
    if not truncate:
        bits = bits + (0xFFF + ((bits >> 13) & 1))
    return (bits & ~0x1FFF).view(torch.float32)


class TF32Matmuls(TorchFunctionMode):
    """TF32 tensor-core matmuls on the CPU: float32 operands rounded to TF32, products summed in
    float32. Attention is written out (softmax between two matmuls), as SDPA's math path does."""

    LINEAR_ALGEBRA = {F.linear, torch.matmul, torch.Tensor.__matmul__}

    def __init__(self, truncate: bool = False):
        super().__init__()
        self.truncate = truncate

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.LINEAR_ALGEBRA:
            operands = [round_to_tf32(a, self.truncate) if isinstance(a, torch.Tensor) and a.dtype == torch.float32
                        and i < 2 else a for i, a in enumerate(args)]
            return func(*operands, **kwargs)
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
            scores = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            return torch.matmul(scores.masked_fill(~causal, float("-inf")).softmax(-1), v)
        return func(*args, **kwargs)


@pytest.mark.parametrize("truncate", [False, True], ids=["round-to-nearest", "truncation"])
def test_emulated_tf32_passes_tf32_but_not_fp32(truncate):
    """docs/sources.md#tf32's measurement: TF32's rounding passes the tf32 policy and fails fp32's;
    the reference cast to bf16 fails tf32."""
    golden = load_golden(named_case("seed"))
    truth = Truth(golden.logits64, None, golden.logits32, None)  # logits only
    with torch.no_grad(), TF32Matmuls(truncate):
        logits = golden.model(golden.idx, full_logits=True)[0]
    verdict, _ = parity_verdicts(TARGETS["eager-cuda-tf32"], truth, logits, None)
    assert verdict.passed, verdict.explain()
    assert max(g.min_multiplier for g in verdict.gates) > 300  # TF32 is not fp32 with noise
    assert not parity_verdicts(TARGETS["eager-cuda"], truth, logits, None)[0].passed
    with torch.no_grad():
        bf16 = copy.deepcopy(golden.model).bfloat16()(golden.idx, full_logits=True)[0]
    assert not parity_verdicts(TARGETS["eager-cuda-tf32"], truth, bf16, None)[0].passed


# --- latency ---------------------------------------------------------------------------------

class RecordingBenchmark:
    """pytest-benchmark's ``pedantic`` protocol, timing nothing: calls the function."""

    def __init__(self):
        self.stats = SimpleNamespace(stats=SimpleNamespace(data=[]))
        self.group = None

    def pedantic(self, fn, rounds, warmup_rounds, iterations):
        for _ in range(warmup_rounds + rounds):
            result = fn()
        self.stats.stats.data = [0.001] * rounds
        return result


@pytest.mark.parametrize("harness_timer", [False, True], ids=["pytest-benchmark", "harness-under-xdist"])
@pytest.mark.parametrize("name, synchronizes", [("eager-cuda", True), ("inductor-cuda", True),
                                                 ("tripy-fp16", True), ("eager", False)])
def test_latency_rounds_of_cuda_targets_end_synchronized(name, synchronizes, harness_timer, monkeypatch,
                                                         target_registry):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.append("sync"))
    target = target_registry.get(name)
    settings = LatencySettings(PROFILES["quick"], harness_timer=harness_timer)
    run = LatencyRun(None, target, target_registry.get("eager"), RecordingBenchmark(), settings,
                     check="latency-forward", case_id="x")
    run.measure(lambda: events.append("target"), lambda: events.append("eager"), rounds=2, warmup_rounds=1)
    target_events = [e for e in events if e != "eager"]
    assert target_events == (["sync"] + ["target", "sync"] * 3 if synchronizes else ["target"] * 3)


def test_mfu_peak_class_follows_the_arithmetic():
    assert [peak_compute(TARGETS[n]) for n in NAMES] == ["fp32", "tf32", "16-bit", "16-bit", "fp32"]
    assert peak_compute(tripy.TRIPY_INT4_WO) == "16-bit" and peak_compute(tripy.TRIPY_FP32) == "fp32"


# --- the report ------------------------------------------------------------------------------

def test_report_shows_torch_cuda_beside_tripy():
    """One matrix: a column per target, the GPU's together (eager-cuda first), one row per check."""
    machines = [("tripy-fp32", "cuda"), ("neuron", "neuron"), ("eager", "cpu"), ("inductor-cuda", "cuda"),
                ("eager-cuda", "cuda")]
    records = [{"target": t, "device": d, "precision": "fp32", "case": "seed", "check": "logits", "status": "pass"}
               for t, d in machines]
    columns, rows, _ = build_matrix(records)
    assert [c.target for c in columns] == ["eager", "eager-cuda", "inductor-cuda", "tripy-fp32", "neuron"]
    (row,) = rows
    assert all(cell is not None and cell.status == "pass" for cell in row.cells)
