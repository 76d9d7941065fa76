"""Under pytest-xdist a latency case runs alone, and is timed (harness/pytest_plugin/quiet.py)."""

import fcntl
import json
import threading
import time

import pytest
from gpt_conformance.harness.checks.latency import HARNESS_TIMER
from gpt_conformance.harness.pytest_plugin.quiet import RunLock

from tests.runner import run_pytest

pytest_plugins = ["pytester"]


def spans_in_thread(directory, alone: bool, spans: dict, name: str, seconds: float, entered=None):
    def run():
        lock = RunLock(directory)
        lock.acquire(alone)
        spans[name] = [time.monotonic()]
        if entered is not None:
            entered.set()
        time.sleep(seconds)
        spans[name].append(time.monotonic())
        lock.release()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def turnstile_taken(directory) -> bool:
    with open(directory / "turnstile", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def test_an_alone_holder_waits_for_the_shared_ones_and_later_shared_ones_wait_for_it(tmp_path):
    spans: dict[str, list[float]] = {}
    shared_in = threading.Event()
    first = spans_in_thread(tmp_path, False, spans, "shared", 0.4, shared_in)
    assert shared_in.wait(10)
    alone = spans_in_thread(tmp_path, True, spans, "alone", 0.2)
    deadline = time.monotonic() + 10
    while not turnstile_taken(tmp_path):  # the alone holder is queued for the lock
        assert time.monotonic() < deadline
        time.sleep(0.01)
    late = spans_in_thread(tmp_path, False, spans, "late", 0.0)
    for thread in (first, alone, late):
        thread.join(10)
    assert spans["alone"][0] >= spans["shared"][1]
    assert spans["late"][0] >= spans["alone"][1]  # not past the queued alone holder


def spans_under_xdist(pytester, *args: str) -> list[list]:
    log = pytester.path / "spans.jsonl"
    log.unlink(missing_ok=True)
    pytester.makepyfile(f"""
        import json, time
        import pytest

        pytestmark = pytest.mark.gpt_conformance

        def span(name):
            start = time.monotonic()
            time.sleep(0.15)
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps([name, start, time.monotonic()]) + "\\n")

        @pytest.mark.parametrize("i", range(12))
        def test_busy(i):
            span(f"busy{{i}}")

        @pytest.mark.latency
        @pytest.mark.xdist_group("latency")
        @pytest.mark.parametrize("i", range(3))
        def test_timed(i):
            span(f"timed{{i}}")
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", f"--report-dir={pytester.path}", *args)
    assert result.ret == pytest.ExitCode.OK
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(spans) == 15
    return spans


def beside_latency(spans: list[list]) -> list[str]:
    """The tests that ran while a latency case did."""
    return [other[0] for name, start, end in spans if name.startswith("timed")
            for other in spans if other[0] != name and other[1] < end and other[2] > start]


def test_under_xdist_no_conformance_test_runs_beside_a_latency_case(pytester):
    spans = spans_under_xdist(pytester)
    assert beside_latency(spans) == []
    # One group, one worker, the lock kept from case to case: nothing starts between them.
    timed = [s for s in spans if s[0].startswith("timed")]
    first, last = min(s[1] for s in timed), max(s[2] for s in timed)
    assert [s[0] for s in spans if first <= s[1] <= last and not s[0].startswith("timed")] == []
    # The control: without the lock, the two workers' tests overlap.
    assert beside_latency(spans_under_xdist(pytester, "-p", "no:gpt_conformance.harness.pytest_plugin.quiet"))


def test_the_latency_cases_are_timed_under_xdist(tmp_path):
    report_dir = tmp_path / "records"
    report_dir.mkdir()
    proc, records, _ = run_pytest("cases/test_latency.py", "-m", "cpu", "--target", "eager", "-k", "tiny-1x64",
                                  "-n", "2", report_dir=report_dir)
    assert proc.returncode == 0, proc.stdout[-2000:]
    latency = [r for r in records if r["check"] == "latency-forward"]
    assert [r["status"] for r in latency] == ["pass"]
    assert latency[0]["latency"]["timer"] == HARNESS_TIMER
    assert latency[0]["latency"]["rounds"] == 5 and latency[0]["latency"]["median_s"] > 0  # the quick profile
