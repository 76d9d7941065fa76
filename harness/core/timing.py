"""Core layer: latency arithmetic: summaries of per-round timings, ratios against eager, FLOP/s and MFU.

Pure functions on lists of seconds, so the numbers the records show can be checked on synthetic
timings. Absolute times on a shared machine are noise; the figure a user should read is a
target's median divided by eager's median measured in the same session, with its spread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def quartiles(data: Sequence[float]) -> tuple[float, float]:
    """(Q1, Q3) by the rule pytest-benchmark's ``Stats`` uses (Wikipedia's quartile methods 2 for
    an even count and 3 for an odd one), so an IQR here equals the one in its table."""
    if not data:
        raise ValueError("quartiles of no data")
    ordered = sorted(data)
    n = len(ordered)
    if n == 1:
        return ordered[0], ordered[0]
    if n % 2 == 0:
        return statistics.median(ordered[: n // 2]), statistics.median(ordered[n // 2:])
    k, r = divmod(n, 4)
    if r == 1:
        return 0.25 * ordered[k - 1] + 0.75 * ordered[k], 0.75 * ordered[3 * k] + 0.25 * ordered[3 * k + 1]
    return 0.75 * ordered[k] + 0.25 * ordered[k + 1], 0.25 * ordered[3 * k + 1] + 0.75 * ordered[3 * k + 2]


@dataclass(frozen=True)
class TimingSummary:
    median_s: float
    q1_s: float
    q3_s: float
    rounds: int

    @property
    def iqr_s(self) -> float:
        return self.q3_s - self.q1_s


def summarize(seconds: Sequence[float]) -> TimingSummary:
    """Median and quartiles of per-round timings; rejects empty, negative or non-finite rounds."""
    if not seconds:
        raise ValueError("no timing rounds to summarize")
    bad = [s for s in seconds if not (s >= 0 and s != float("inf"))]
    if bad:
        raise ValueError(f"timings must be finite and >= 0 seconds, got {bad[:3]}")
    q1, q3 = quartiles(seconds)
    return TimingSummary(statistics.median(seconds), q1, q3, len(seconds))


@dataclass(frozen=True)
class Ratio:
    """``median(target) / median(eager)``; ``q1``/``q3`` are the quartiles of the ratio of every
    target round to every eager round, so ``iqr`` is the spread a reader should expect of the
    ratio itself (wide when either side was noisy)."""

    value: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def ratio_vs_baseline(target_s: Sequence[float], baseline_s: Sequence[float]) -> Ratio:
    target = summarize(target_s)
    baseline = summarize(baseline_s)
    if baseline.median_s <= 0 or min(baseline_s) <= 0:
        raise ValueError("baseline rounds must take a positive time to divide by")
    pairwise = [t / b for t in target_s for b in baseline_s]
    q1, q3 = quartiles(pairwise)
    return Ratio(target.median_s / baseline.median_s, q1, q3)


def flops_per_second(flops: float, seconds: float) -> float:
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return flops / seconds


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak FLOP/s."""
    if peak_flops <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak_flops}")
    return flops_per_second(flops, seconds) / peak_flops


def synchronized(fn: Callable[[], object], synchronize: Callable[[], None]) -> Callable[[], object]:
    """``fn`` followed by ``synchronize()``, as one call to time. A device that runs asynchronously
    (CUDA: a call returns once its kernels are queued) is then timed to the end of its work, not
    to the last launch; the previous round's ``synchronize`` left nothing queued before the start."""
    def call() -> object:
        result = fn()
        synchronize()
        return result

    return call


def time_rounds(fn: Callable[[], object], rounds: int, warmup_rounds: int,
                timer: Callable[[], float] = time.perf_counter) -> list[float]:
    """Per-round seconds of ``fn()`` after ``warmup_rounds`` untimed calls: the protocol of
    pytest-benchmark's ``pedantic(rounds=, warmup_rounds=, iterations=1)``. The harness uses it
    only for the eager baseline, which it measures next to every target whether or not eager was
    selected, so each ratio's two sides come from the same session and the same minute."""
    if rounds < 1 or warmup_rounds < 0:
        raise ValueError(f"need rounds >= 1 and warmup_rounds >= 0, got {rounds}, {warmup_rounds}")
    for _ in range(warmup_rounds):
        fn()
    seconds = []
    for _ in range(rounds):
        start = timer()
        fn()
        seconds.append(timer() - start)
    return seconds
