"""Run pytest in a subprocess, as a user would, and read back its records and outcomes.

The one helper for every test that needs a process boundary (entry points, xdist, a printed
command replayed as printed)."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import pytest
from gpt_conformance.harness.core.records import read_records

ROOT = Path(__file__).resolve().parent.parent
# What pytest-xdist sets in its workers: a pytest started from one must not inherit it (tests/conftest.py).
XDIST_WORKER_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def shares_one_run(module: str) -> pytest.MarkDecorator:
    """The ``pytestmark`` of a test module whose tests read one pytest run made by a module-scoped
    fixture: one xdist group, so that ``-n N --dist loadgroup`` makes that run once, on one worker.
    Without it each worker that got one of the module's tests made the run again (.ci/run made
    tests/test_planted_bugs.py's 120 s run twice)."""
    return pytest.mark.xdist_group(module)


class PytestRun(NamedTuple):
    proc: subprocess.CompletedProcess
    records: list[dict]
    outcomes: dict[str, str]  # test name -> passed | failure | error | skipped (from JUnit XML)


def run_pytest(*args: str, report_dir: Path, cwd: Path = ROOT, pythonpath: tuple[Path, ...] = (),
               timeout: int = 900) -> PytestRun:
    """``python -m pytest --report-dir=REPORT_DIR ARGS`` in ``cwd`` (default: the repository root),
    with ``pythonpath`` and the repository importable, and a run id of its own."""
    junit = report_dir.parent / f"{report_dir.name}-junit.xml"
    env = {name: value for name, value in os.environ.items() if name not in XDIST_WORKER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in pythonpath), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("GPT_CONFORMANCE_RUN_ID", None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}",
           f"--report-dir={report_dir}", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    records = read_records([report_dir]) if report_dir.exists() else []
    outcomes = {}
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return PytestRun(proc, records, outcomes)


def statuses(records: list[dict], check: str | None = None) -> dict[tuple[str, str], str]:
    """{(target, case): status} for records of ``check`` (any check when None)."""
    return {(r["target"], r["case"]): r["status"] for r in records if check is None or r["check"] == check}
