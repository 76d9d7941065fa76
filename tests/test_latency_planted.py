"""Proof that the latency tier sees a slow target, measures eager even when only another target
is selected, gates regressions through pytest-benchmark, times it under xdist too (where
pytest-benchmark does not), says so when timing is disabled, and never times a wrong answer.

Each test runs the real latency cases in a subprocess, as a user would, on the tiny shapes only.
"""

import json

import pytest
from gpt_conformance.harness.checks.latency import HARNESS_TIMER

from tests.planted_latency import PLANTED_SLOW
from tests.runner import run_pytest, shares_one_run

pytestmark = shares_one_run(__name__)

CASES = ["-p", "tests.planted_latency", "cases/test_latency.py", "-m", "latency and not slow"]
TINY = [*CASES, "-k", "tiny"]
TINY_FORWARD = [*CASES, "-k", "tiny and forward"]


def latency_records(records, target):
    return {r["check"]: r for r in records if r["target"] == target and r["check"].startswith("latency")}


@pytest.fixture(scope="module")
def quiet_threads():
    # One intra-op thread: on a shared 2-core machine, spinning OpenMP threads make eager's own
    # time swing by 100x, which is noise this proof does not need.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield mp


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory, quiet_threads):
    tmp = tmp_path_factory.mktemp("latency")
    # Only the planted target is selected: the eager baseline must still be measured.
    proc, records, _ = run_pytest(*TINY, "--target", PLANTED_SLOW.name, f"--benchmark-json={tmp / 'bench.json'}",
                               report_dir=tmp / "records")
    return proc, records, tmp / "bench.json"


def test_planted_slow_target_ratio_is_clearly_above_one(slow_run):
    proc, records, _ = slow_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = latency_records(records, PLANTED_SLOW.name)
    assert set(got) == {"latency-forward", "latency-generate"}, proc.stdout
    for check, record in got.items():
        latency = record["latency"]
        assert record["status"] == "pass", record["message"]
        # eager's tiny forward takes milliseconds, the planted one sleeps 100 ms more per forward
        assert latency["ratio_vs_eager"] > 2, (check, latency)
        assert latency["ratio_q1"] > 1, (check, latency)
        assert latency["eager"]["rounds"] == latency["rounds"] and "whatever --target" in latency["eager"]["measured"]
        assert latency["time_to_first_result_s"] >= latency["first_call_s"] > 0
    generate = got["latency-generate"]["latency"]
    assert generate["tokens_per_s"] < generate["eager_tokens_per_s"] / 2
    assert generate["tokens_match_eager"] is True


def test_records_carry_mfu_with_its_peak(slow_run):
    _, records, _ = slow_run
    latency = latency_records(records, PLANTED_SLOW.name)["latency-forward"]["latency"]
    assert 0 < latency["mfu"] < 1
    assert latency["peak_flops"] > 0 and latency["peak_flops_source"].startswith("estimate:")
    assert latency["mfu"] == pytest.approx(latency["flops"] / latency["median_s"] / latency["peak_flops"])


def test_benchmark_json_holds_the_timings_and_ratios(slow_run):
    _, _, bench_json = slow_run
    benchmarks = json.loads(bench_json.read_text())["benchmarks"]
    names = {b["name"] for b in benchmarks}
    assert names == {f"test_forward_latency[{PLANTED_SLOW.name}-tiny-1x64]",
                     f"test_generation_throughput[{PLANTED_SLOW.name}-tiny-1x16]"}
    for bench in benchmarks:
        assert bench["extra_info"]["ratio_vs_eager"] > 2
        assert bench["stats"]["rounds"] == bench["extra_info"]["rounds"]


def test_regression_gate_fails_on_a_slowdown(tmp_path, quiet_threads):
    storage = f"--benchmark-storage=file://{tmp_path / 'benchmarks'}"
    forward = [*TINY_FORWARD, "--target", PLANTED_SLOW.name, storage]
    quiet_threads.setenv("PLANTED_LATENCY_SLEEP_S", "0")
    saved, _, _ = run_pytest(*forward, "--benchmark-save=baseline", report_dir=tmp_path / "r1")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    quiet_threads.setenv("PLANTED_LATENCY_SLEEP_S", "0.1")
    compared, _, _ = run_pytest(*forward, "--benchmark-compare", "--benchmark-compare-fail=median:10%",
                             report_dir=tmp_path / "r2")
    quiet_threads.delenv("PLANTED_LATENCY_SLEEP_S")
    assert compared.returncode != 0, compared.stdout
    assert "Performance has regressed" in compared.stdout + compared.stderr


def test_under_xdist_the_harness_times_the_slow_target_and_says_so(tmp_path, quiet_threads):
    proc, records, _ = run_pytest(*TINY_FORWARD, "--target", PLANTED_SLOW.name, "-n", "2",
                               report_dir=tmp_path / "records")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "each latency case ran alone, timed by the harness" in proc.stdout
    (record,) = latency_records(records, PLANTED_SLOW.name).values()
    assert record["status"] == "pass", record["message"]
    assert record["latency"]["timer"] == HARNESS_TIMER
    assert record["latency"]["ratio_vs_eager"] > 2 and record["latency"]["ratio_q1"] > 1


def test_benchmark_disable_skips_the_tier_saying_so(tmp_path, quiet_threads):
    proc, records, _ = run_pytest(*TINY_FORWARD, "--target", PLANTED_SLOW.name, "--benchmark-disable",
                               report_dir=tmp_path / "records")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pytest-benchmark is disabled" in proc.stdout and "1 skipped" in proc.stdout
    (record,) = latency_records(records, PLANTED_SLOW.name).values()
    assert record["status"] == "skip" and "--benchmark-disable" in record["message"]
    assert "latency" not in record


def test_a_wrong_target_is_not_timed(tmp_path, quiet_threads):
    proc, records, _ = run_pytest("-p", "tests.planted", *TINY_FORWARD, "--target", "planted-layernorm-eps",
                               report_dir=tmp_path / "records")
    assert proc.returncode == 1 and "not timed, output is wrong" in proc.stdout, proc.stdout + proc.stderr
    (record,) = latency_records(records, "planted-layernorm-eps").values()
    assert record["status"] == "fail" and record["message"].startswith("not timed")
    assert "latency" not in record
