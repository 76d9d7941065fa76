"""Run pytest in a subprocess, as a user would, and read back its records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.records import read_records

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(*args: str, report_dir: Path, timeout: int = 900) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``python -m pytest ARGS --report-dir REPORT_DIR`` from the repository root."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--rootdir={ROOT}",
           f"--report-dir={report_dir}", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    records = read_records([report_dir]) if report_dir.exists() else []
    return proc, records


def statuses(records: list[dict], check: str | None = None) -> dict[tuple[str, str], str]:
    """{(target, case): status} for records of ``check`` (any check when None)."""
    return {(r["target"], r["case"]): r["status"] for r in records if check is None or r["check"] == check}
