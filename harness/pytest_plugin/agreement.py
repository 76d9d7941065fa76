"""Pytest glue: every conformance test's outcome agrees with its records.

- a test with an ``xpass`` record (a declared expected failure that passed) is reported failed,
  naming the declaration;
- a passed test holds no ``fail`` or ``error`` record (``pass``, ``recorded`` and the ``skip`` of
  a vacuous sub-check are fine); if it does, the test is reported failed, with the records' word;
- a failed test holds a ``fail`` or ``error`` record; if it wrote none (the case itself raised),
  an ``error`` record with the failure's first line is written for it;
- a test that is pytest's xfail holds ``xfail`` records (``outcomes``), and no skip is added;
- a skipped test holds a ``skip`` record and no ``fail`` or ``error``; a skip the case did not
  record (a probe, a ``pytest.skip`` in the case) is recorded with its reason;
- a passed test whose records judged nothing (a ``recorded`` record and no ``pass``) is shown as
  ``recorded``, not ``passed``: its own letter ``R`` in the progress line, its own count in the
  summary line ("3 passed, 2 recorded"), the word the report shows for it (a report cell shows
  ``pass`` over ``recorded`` too). It is still a passed test to pytest (exit status, JUnit XML).

So the report, built from the records, can never show red for a skipped test or green for a
failed one. Applies to tests parametrized by a target (the conformance cases).
"""

from __future__ import annotations

import pytest
from gpt_conformance.harness.core.records import CheckRecord
from gpt_conformance.harness.core.targets import Target
from gpt_conformance.harness.pytest_plugin.plugin import SESSION_KEY

BAD = ("fail", "error", "xpass")
# A passed test's user property that marks it recorded (a property survives xdist's transport).
RECORDED = ("gpt_conformance_status", "recorded")


def target_of(item: pytest.Item) -> Target | None:
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    return target if isinstance(target, Target) else None


def first_line(report: pytest.TestReport, call: pytest.CallInfo) -> str:
    """The skip reason, or the exception's first line."""
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        return report.longrepr[2].removeprefix("Skipped: ")
    text = call.excinfo.exconly() if call.excinfo is not None else str(report.longrepr or "")
    return next((line for line in text.strip().splitlines() if line.strip()), "failed")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    session = item.config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.test_id = item.nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    target = target_of(item)
    session = item.config.stash.get(SESSION_KEY, None)
    if target is None or session is None or (call.when != "call" and report.passed) or call.when == "teardown":
        return report
    statuses = session.statuses.get(item.nodeid, [])
    bad = [s for s in statuses if s in BAD]
    unexpected = session.unexpected_passes.get(item.nodeid, [])
    if unexpected and not report.failed:
        report.outcome = "failed"
        report.longrepr = "gpt-conformance: a declared expected failure passes (xpass):\n" + "\n".join(unexpected)
    elif hasattr(report, "wasxfail"):
        return report
    elif bad and not report.failed:
        was = "passed" if report.passed else f"skipped ({first_line(report, call)})"
        report.outcome = "failed"
        report.longrepr = (f"gpt-conformance: the test {was}, but its records hold {len(bad)} "
                           f"{'/'.join(sorted(set(bad)))} verdict(s): a test's outcome and its records must agree")
    elif report.failed and not bad:
        session.record(CheckRecord(target, item.nodeid, call.when if call.when != "call" else "test",
                                   status="error", message=first_line(report, call)))
    elif report.skipped and "skip" not in statuses:
        session.record(CheckRecord(target, item.nodeid, "setup" if call.when == "setup" else "test",
                                   status="skip", message=first_line(report, call)))
    elif report.passed and "recorded" in statuses and "pass" not in statuses:
        report.user_properties.append(RECORDED)
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """(category, progress letter, verbose word) of a recorded test: measured, not judged."""
    if report.when == "call" and report.passed and RECORDED in report.user_properties:
        return "recorded", "R", ("RECORDED", {"yellow": True})
    return None
