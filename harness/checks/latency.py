"""Checks layer: the latency tier's measurement, timings of every target read as ratios against eager.

``LatencyRun`` times one target on one input for a latency case (the tier's options and fixture
are in ``gpt_conformance.harness.pytest_plugin.latency``; the timer is pytest-benchmark's ``benchmark`` object):

1. prepare the target and make its first call through the checked path; ``prepare_s`` plus that
   call is the *time to first result* (compile or export included), reported apart from latency;
2. judge that first output against the fp64 reference under the target's policy: a wrong answer
   is never timed (its record fails instead);
3. time the eager baseline on the same model and input, right before the target, with the same
   rounds and warm-up. This is done whatever ``--target`` selected, so every ratio's two sides come
   from the same process and the same minute;
4. time the target with pytest-benchmark's ``benchmark.pedantic`` (warm-up rounds excluded), so
   ``--benchmark-json``, ``--benchmark-save`` and ``--benchmark-compare-fail`` see it. Under
   pytest-xdist, where pytest-benchmark turns itself off, the case runs alone
   (``gpt_conformance.harness.pytest_plugin.quiet``) and the harness times the target as it times
   the baseline;
5. record median, IQR, ratio to eager with the ratio's IQR, FLOP/s and MFU.

Nothing here asserts on a time: ratios are information, and regressions are gated by
pytest-benchmark against a baseline saved on the same machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from gpt_conformance.harness.checks.conformance import Truth, parity_verdicts
from gpt_conformance.harness.checks.precision import low_precision_of, output_arithmetic_verdict
from gpt_conformance.harness.checks.reference_memo import REFERENCES
from gpt_conformance.harness.checks.session import ConformanceSession
from gpt_conformance.harness.core.errors import CheckFailed, UnsupportedHere
from gpt_conformance.harness.core.peak_flops import peak_for
from gpt_conformance.harness.core.policies import Verdict
from gpt_conformance.harness.core.records import CheckRecord
from gpt_conformance.harness.core.targets import Target
from gpt_conformance.harness.core.timing import (
    TimingSummary,
    mfu,
    ratio_vs_baseline,
    summarize,
    synchronized,
    time_rounds,
)
from gpt_conformance.reference.model import GPT

PROFILE_ENV = "GPT_CONFORMANCE_LATENCY_PROFILE"
BASELINE_NOTE = ("eager, measured by the harness on the same model and input right before this target, "
                 "in the same process, with the same rounds and warm-up, whatever --target selected")


@dataclass(frozen=True)
class LatencyProfile:
    name: str
    forward_rounds: int
    forward_warmup: int
    generate_rounds: int
    generate_warmup: int
    new_tokens: int


# quick keeps `pytest -m cpu` cheap on a 2-core laptop; nightly buys a tighter IQR with rounds.
PROFILES = {
    "quick": LatencyProfile("quick", forward_rounds=5, forward_warmup=2, generate_rounds=3, generate_warmup=1,
                            new_tokens=8),
    "nightly": LatencyProfile("nightly", forward_rounds=30, forward_warmup=5, generate_rounds=10, generate_warmup=2,
                              new_tokens=32),
}


# Who timed the rounds, in each latency record ("timer").
PYTEST_BENCHMARK_TIMER = "pytest-benchmark"
HARNESS_TIMER = ("the harness, with pytest-benchmark's pedantic protocol: pytest-benchmark is off under "
                 "pytest-xdist, and the case ran alone, the other workers waiting (harness/pytest_plugin/quiet.py)")


@dataclass
class LatencySettings:
    profile: LatencyProfile
    peak_overrides: dict[str, float] = field(default_factory=dict)
    # Under pytest-xdist, where pytest-benchmark does not time and each latency case runs alone.
    harness_timer: bool = False


def forward_flops(model: GPT, batch: int, seq_len: int) -> float:
    """Forward-only model FLOPs of one call on [batch, seq_len]: ``flops_per_token(T, training=False)``
    (2N + 4·L·H·Q·T, a third of nanoGPT's training count 6N + 12·L·H·Q·T) per token."""
    return batch * seq_len * model.flops_per_token(seq_len, training=False)


def device_synchronizer(target: Target) -> Callable[[], None] | None:
    """What waits for a target's device to finish: ``torch.cuda.synchronize`` for a CUDA target."""
    return torch.cuda.synchronize if target.requirements.device == "cuda" else None


def peak_compute(target: Target) -> str:
    """The peak-FLOP/s class a target's arithmetic runs at (``gpt_conformance.harness.core.peak_flops``): 16-bit
    for a low-precision target (its compute dtype), tf32 for the tf32 policy, else fp32."""
    if low_precision_of(target) is not None:
        return "16-bit"
    return "tf32" if target.precision == "tf32" else "fp32"


def summary_dict(summary: TimingSummary) -> dict[str, float]:
    return {"median_s": summary.median_s, "iqr_s": summary.iqr_s, "q1_s": summary.q1_s, "q3_s": summary.q3_s,
            "rounds": summary.rounds}


class LatencyRun:
    """Times one target against the eager baseline on one model and input, and records it."""

    def __init__(self, conformance: ConformanceSession, target: Target, baseline: Target, benchmark: Any,
                 settings: LatencySettings, check: str, case_id: str):
        if not check.startswith("latency"):
            raise ValueError(f"latency checks are named latency*, got {check!r}")
        self.conformance = conformance
        self.target = target
        self.baseline = baseline
        self.benchmark = benchmark
        self.settings = settings
        self.check = check
        self.case_id = case_id
        self.verdict: Verdict | None = None  # the first output's parity, set by first_result
        benchmark.group = case_id  # pytest-benchmark's table compares targets within a case

    def require_runnable(self, config: Any, batch: int, max_seq_len: int) -> None:
        """Skip, loudly and on the record, when pytest-benchmark will not time anything or the
        target cannot take the shape (``max_seq_len``: the longest sequence it will be called on)."""
        input_shape = (batch, max_seq_len)
        if self.benchmark.disabled and not self.settings.harness_timer:
            reason = ("pytest-benchmark is disabled (--benchmark-disable, or xdist `-n` on a platform without "
                      "fcntl, where a latency case cannot run alone): latency not measured; run pytest -m latency "
                      "without either")
        elif not self.target.capabilities.accepts(batch, max_seq_len):
            reason = f"{self.target.name}: capabilities do not accept batch {batch} x sequence {max_seq_len}"
        else:
            return
        self.conformance.record(CheckRecord(self.target, self.case_id, self.check, config=config,
                                            input_shape=input_shape, status="skip", message=reason))
        raise UnsupportedHere(reason)

    def first_result(self, model: GPT, idx: torch.Tensor, seed: Any) -> dict[str, Any]:
        """Prepare, call once (checked), and judge that output (against fp64, or for a low-precision
        target against the reference with its own weights in its dtype); fails on a wrong answer."""
        prepared = self.conformance.prepare(self.target, model, self.case_id)
        prepared_before = prepared.uses > 1
        logits, _, first_call_s = self.conformance.run(self.target, model, idx, None, self.case_id, seed=seed,
                                                       check=self.check)
        if low_precision_of(self.target) is not None:
            verdict = output_arithmetic_verdict(self.target, prepared.runnable, model, idx, logits)
        else:
            with torch.no_grad():
                logits64, _, logits32, _ = REFERENCES.outputs(model, idx, None)
            verdict, _ = parity_verdicts(self.target, Truth(logits64, None, logits32, None), logits, None)
        self.verdict = verdict
        if not verdict.passed:
            self.conformance.record(CheckRecord(self.target, self.case_id, self.check, verdict=verdict,
                                                config=model.config, input_shape=tuple(idx.shape), seed=seed,
                                                message="not timed: first output is wrong: " + verdict.message))
            raise CheckFailed(f"{self.target.name} on {self.case_id}: not timed, output is wrong\n{verdict.explain()}",
                              verdict)
        return {"prepare_s": prepared.prepare_seconds, "first_call_s": first_call_s,
                "time_to_first_result_s": prepared.prepare_seconds + first_call_s,
                "prepared_before": prepared_before}

    def baseline_runnable(self, model: GPT):
        return self.conformance.prepare(self.baseline, model, self.case_id).runnable

    def measure(self, target_call: Callable[[], Any], baseline_call: Callable[[], Any], rounds: int,
                warmup_rounds: int) -> tuple[list[float], list[float], Any]:
        """(target seconds per round, eager seconds per round, the target call's last result). A CUDA
        target's rounds each end when the GPU is done (``device_synchronizer``)."""
        synchronize = device_synchronizer(self.target)
        if synchronize is not None:
            synchronize()  # nothing of the first call left queued in the first round
            target_call = synchronized(target_call, synchronize)
        with torch.no_grad():
            baseline_s = time_rounds(baseline_call, rounds, warmup_rounds)
            if self.settings.harness_timer:
                last: dict[str, Any] = {}
                target_s = time_rounds(lambda: last.update(result=target_call()), rounds, warmup_rounds)
                return target_s, baseline_s, last["result"]
            result = self.benchmark.pedantic(target_call, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
        return list(self.benchmark.stats.stats.data), baseline_s, result

    def record(self, model: GPT, input_shape: tuple, seed: Any, target_s: list[float],
               baseline_s: list[float], warmup_rounds: int, flops: float, first: dict[str, Any],
               tokens_per_call: int | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the latency record; ``tokens_per_call`` (generated tokens) adds tokens/s."""
        if self.verdict is None:
            raise RuntimeError("LatencyRun.record before first_result: the output was never checked")
        summary, eager = summarize(target_s), summarize(baseline_s)
        ratio = ratio_vs_baseline(target_s, baseline_s)
        peak = peak_for(self.target.requirements.device, self.settings.peak_overrides, peak_compute(self.target))
        achieved = flops / summary.median_s
        latency = {
            **summary_dict(summary),
            "warmup_rounds": warmup_rounds,
            "profile": self.settings.profile.name,
            "timer": HARNESS_TIMER if self.settings.harness_timer else PYTEST_BENCHMARK_TIMER,
            "ratio_vs_eager": ratio.value,
            "ratio_iqr": ratio.iqr,
            "ratio_q1": ratio.q1,
            "ratio_q3": ratio.q3,
            "eager": {**summary_dict(eager), "measured": BASELINE_NOTE},
            "flops": flops,
            "flops_basis": "forward-only: GPT.flops_per_token(T, training=False) x tokens per forward",
            "achieved_flops_per_s": achieved,
            "mfu": mfu(flops, summary.median_s, peak.flops) if peak else None,
            "peak_flops": peak.flops if peak else None,
            "peak_flops_source": peak.source if peak else "unknown for this device: pass --peak-flops DEVICE=FLOPS",
            **first,
            **(extra or {}),
        }
        if tokens_per_call is not None:
            latency["tokens_per_s"] = tokens_per_call / summary.median_s
            latency["eager_tokens_per_s"] = tokens_per_call / eager.median_s
        self.benchmark.extra_info.update({k: v for k, v in latency.items() if k != "eager"})
        message = (f"timed (no gate on times): median {summary.median_s * 1e3:.3g} ms, "
                   f"{ratio.value:.3g}x eager (IQR {ratio.q1:.3g}..{ratio.q3:.3g}); first output {self.verdict.status} "
                   f"under policy {self.verdict.policy!r}")
        return self.conformance.record(CheckRecord(self.target, self.case_id, self.check, verdict=self.verdict,
                                                   config=model.config, input_shape=input_shape, seed=seed,
                                                   message=message, duration=summary.median_s,
                                                   extra={"latency": latency}))
