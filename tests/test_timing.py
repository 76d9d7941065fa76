"""The latency arithmetic on synthetic timings: quartiles, ratios against eager, MFU, peaks."""

import math
import random
import re

import pytest
from gpt_conformance.harness.core.peak_flops import (
    cpu_peak_estimate,
    fp32_lanes,
    gpu_peak,
    parse_cpuinfo,
    parse_peak_option,
    peak_for,
)
from gpt_conformance.harness.core.timing import mfu, quartiles, ratio_vs_baseline, summarize, synchronized, time_rounds
from pytest_benchmark.stats import Stats


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 31])
def test_quartiles_match_pytest_benchmark(n):
    data = [random.Random(n).uniform(0.001, 0.01) for _ in range(n)]
    stats = Stats()
    for value in data:
        stats.update(value)
    assert quartiles(data) == pytest.approx((stats.q1, stats.q3), rel=1e-12)
    assert summarize(data).iqr_s == pytest.approx(stats.iqr, rel=1e-12, abs=1e-15)


def test_summary_of_known_timings():
    summary = summarize([0.4, 0.1, 0.3, 0.2])  # sorted 0.1 0.2 | 0.3 0.4
    assert (summary.median_s, summary.q1_s, summary.q3_s, summary.rounds) == pytest.approx((0.25, 0.15, 0.35, 4))
    assert summary.iqr_s == pytest.approx(0.2)


def test_ratio_is_median_over_median_with_pairwise_spread():
    eager = [1.0, 2.0, 3.0]
    target = [2.0, 4.0, 6.0]
    ratio = ratio_vs_baseline(target, eager)
    assert ratio.value == pytest.approx(2.0)
    # the nine ratios t/e sorted: 2/3 1 4/3 2 2 2 3 4 6; n=9 -> Q1 = .25*1 + .75*4/3, Q3 = .75*3 + .25*4
    assert (ratio.q1, ratio.q3) == pytest.approx((0.25 * 1 + 0.75 * 4 / 3, 0.75 * 3 + 0.25 * 4))
    assert ratio.iqr == pytest.approx(ratio.q3 - ratio.q1)


def test_identical_timings_give_ratio_one_and_no_spread():
    ratio = ratio_vs_baseline([0.005] * 5, [0.005] * 5)
    assert ratio.value == 1.0 and ratio.iqr == 0.0


def test_a_slower_target_has_ratio_above_one_and_a_faster_one_below():
    eager = [0.010, 0.011, 0.012, 0.010, 0.013]
    assert ratio_vs_baseline([t + 0.1 for t in eager], eager).value > 5
    assert ratio_vs_baseline([t / 4 for t in eager], eager).value == pytest.approx(0.25)


@pytest.mark.parametrize("bad", [[], [float("nan")], [-1.0], [float("inf")]])
def test_bad_timings_are_rejected(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_zero_baseline_is_rejected():
    with pytest.raises(ValueError, match="positive"):
        ratio_vs_baseline([1.0], [0.0])


def test_mfu():
    # 1e12 FLOPs in 0.5 s is 2e12 FLOP/s, a fifth of a 1e13 peak
    assert mfu(1e12, 0.5, 1e13) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        mfu(1e12, 0.0, 1e13)
    with pytest.raises(ValueError):
        mfu(1e12, 1.0, 0.0)


def test_time_rounds_excludes_warmup():
    calls = []
    ticks = iter(range(100))
    seconds = time_rounds(lambda: calls.append(1), rounds=3, warmup_rounds=2, timer=lambda: float(next(ticks)))
    assert len(calls) == 5 and seconds == [1.0, 1.0, 1.0]


def test_cpu_peak_estimate_and_flags():
    assert fp32_lanes({"avx512f", "avx2"}) == (16, "avx512")
    assert fp32_lanes({"avx2", "fma"}) == (8, "avx2")
    assert fp32_lanes({"asimd"}) == (4, "neon")
    peak = cpu_peak_estimate(4, 3.0, {"avx2", "fma"})
    assert peak.flops == 4 * 3.0e9 * 8 * 2 * 2
    assert peak.source.startswith("estimate:")


def test_parse_cpuinfo():
    text = ("model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\ncpu MHz\t\t: 3100.000\n"
            "siblings\t: 8\ncpu cores\t: 4\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n")
    flags, ghz, threads_per_core = parse_cpuinfo(text)
    assert "avx512f" in flags and ghz == 2.5 and threads_per_core == 2
    flags, ghz, threads_per_core = parse_cpuinfo("cpu MHz\t: 2445.4\nflags\t: sse2 avx2\n")
    assert ghz == pytest.approx(2.4454) and threads_per_core is None


def test_peak_option_and_table():
    overrides = parse_peak_option(["1e12", "cuda=989e12"])
    assert overrides == {"*": 1e12, "cuda": 989e12}
    assert peak_for("cuda", overrides).flops == 989e12
    assert peak_for("cpu", overrides).flops == 1e12 and "user" in peak_for("cpu", overrides).source
    assert peak_for("neuron", {}).flops == 95e12
    assert math.isfinite(peak_for("cpu", {}).flops) and "estimate" in peak_for("cpu", {}).source
    for bad in (["fast"], ["cuda=-1"], ["cuda=inf"]):
        with pytest.raises(ValueError, match="--peak-flops"):
            parse_peak_option(bad)


@pytest.mark.parametrize("bad", ["tpu=1e12", "CUDA=1e12", "*=1e12", "=1e12"])
def test_peak_option_names_the_known_device_kinds(bad):
    # An unknown kind matches no target: MFU would silently fall back to the default peak.
    with pytest.raises(ValueError, match=f"--peak-flops '{re.escape(bad)}': unknown device kind .*; "
                                         "known: cpu, cuda, neuron$"):
        parse_peak_option([bad])


@pytest.mark.parametrize("name, compute, tflops", [
    ("NVIDIA H100 80GB HBM3", "16-bit", 989.5),  # the SXM part
    ("NVIDIA H100 80GB HBM3", "fp32", 67),
    ("NVIDIA H100 PCIe", "16-bit", 756.5),
    ("NVIDIA H100 NVL", "tf32", 417.5),
    ("NVIDIA H200", "16-bit", 989.5),
    ("NVIDIA H200", "tf32", 494.5),
    ("NVIDIA H200 NVL", "fp32", 60),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156),
])
def test_gpu_peaks_by_compute_class(name, compute, tflops):
    peak = gpu_peak(name, compute)
    assert peak.flops == pytest.approx(tflops * 1e12) and "datasheet" in peak.source


def test_gpu_peak_of_unknown_gpu_or_class():
    assert gpu_peak("NVIDIA GeForce RTX 4090") is None
    with pytest.raises(ValueError, match="compute class"):
        gpu_peak("NVIDIA H200", "fp64")


def test_synchronized_call_waits_inside_the_timed_call():
    events = []
    call = synchronized(lambda: events.append("call") or 7, lambda: events.append("sync"))
    seconds = time_rounds(call, rounds=2, warmup_rounds=1, timer=lambda: events.append("tick") or 0.0)
    assert call() == 7 and seconds == [0.0, 0.0]
    # The warm-up round, then each timed round: the clock stops after the device has finished.
    assert events == ["call", "sync", "tick", "call", "sync", "tick", "tick", "call", "sync", "tick", "call", "sync"]
