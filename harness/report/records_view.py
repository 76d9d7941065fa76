"""Report layer: loading records (files or directories, one run or many machines) and the
small helpers that read one record: its status, its key, its source, the line a cell shows.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gpt_conformance.harness.core.records import read_records

# "recorded": measured and shown, not judged (neither green nor red). "xfail": a declared expected
# failure that failed (not green); "xpass": a declared expected failure that passed (red: the
# declaration is stale).
STATUSES = ("error", "fail", "xpass", "pass", "xfail", "recorded", "skip")
# Worst first: a cell with several records shows its worst status.
SEVERITY = {"error": 0, "fail": 1, "xpass": 2, "pass": 3, "xfail": 4, "recorded": 5, "skip": 6}
BAD = ("error", "fail", "xpass")
# A metric "moved" when |new - old| / max(|old|, |new|) exceeds this (0.5: doubled or halved).
DEFAULT_TREND_THRESHOLD = 0.5
# Full detail blocks cost ~6 KB each; past this many, the rest are listed one line each (still
# anchored, so every matrix cell's link lands), keeping a night of mass failures a few MB.
DEFAULT_MAX_DETAILS = 500
# Changes between values this small are float noise around zero, not movement.
TREND_ABS_FLOOR = 1e-12
KNOWN_KEYS = {
    "schema", "run_id", "time", "target", "precision", "device", "case", "check", "status", "message",
    "policy", "metrics", "baseline", "gates", "config", "input_shape", "seed", "duration_s",
    "environment", "target_environment", "histogram", "greedy", "quality", "property", "latency",
    "repro", "golden_sha256", "localization", "expected_failure",
}


# --- loading ---------------------------------------------------------------------------------
def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from JSON-Lines files or directories of them; a missing path or a line that is not a
    JSON object is an error naming it."""
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such record file or directory: {', '.join(missing)}")
    records = read_records(list(files))
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise TypeError(f"record {i} is a JSON {type(rec).__name__}, not an object: {str(rec)[:80]}")
    return records


# --- small helpers ---------------------------------------------------------------------------
def number(value: Any) -> float | None:
    """A finite or non-finite float from a record value (records write NaN/Inf as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return None


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits; everything else as text (escaped later by the template)."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        if 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def status_of(rec: dict) -> str:
    status = rec.get("status")
    return status if status in SEVERITY else "error"


def source_of(rec: dict) -> str:
    """Which machine and run a record came from."""
    env = rec.get("environment")
    host = (env.get("hostname") if isinstance(env, dict) else None) or "unknown-host"
    return f"{host} · run {rec.get('run_id', '?')}"


def key_of(rec: dict) -> tuple[str, str, str]:
    return (str(rec.get("target") or "(no target)"), str(rec.get("case") or "(no case)"),
            str(rec.get("check") or "(no check)"))


def anchor(key: tuple[str, ...]) -> str:
    return "d-" + hashlib.sha1("\0".join(key).encode()).hexdigest()[:16]


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def key_metric(rec: dict) -> str:
    """The one line a matrix cell shows on hover."""
    status = status_of(rec)
    prefix = "" if rec.get("status") in SEVERITY else f"unknown status {rec.get('status')!r}: "
    if status == "skip":
        return prefix + (rec.get("message") or "skipped")
    latency = as_dict(rec.get("latency"))
    if number(latency.get("ratio_vs_eager")) is not None:
        return prefix + f"{fmt(number(latency['ratio_vs_eager']))}x eager (median {fmt(latency.get('median_s'))} s)"
    greedy = as_dict(rec.get("greedy"))
    if greedy:
        div = greedy.get("first_divergence")
        return prefix + ("greedy text identical" if div is None else f"greedy diverges at token {div}")
    gates = [g for g in rec.get("gates") or [] if isinstance(g, dict)]
    worst = None
    for g in gates:
        value, bound = number(g.get("value")), number(g.get("bound"))
        if value is None or bound is None:
            continue
        if g.get("direction") == "min":
            ratio = bound / value if value else math.inf
        else:
            ratio = value / bound if bound else (math.inf if value else 0.0)
        if math.isnan(ratio):
            ratio = math.inf
        if worst is None or ratio > worst[0]:
            worst = (ratio, g)
    if worst is not None:
        g = worst[1]
        op = ("<=" if g.get("passed") else ">") if g.get("direction") != "min" else (">=" if g.get("passed") else "<")
        where = as_dict(rec.get("localization")).get("first_divergence")
        return (prefix + f"{g.get('metric')} {fmt(number(g.get('value')))} {op} bound {fmt(number(g.get('bound')))}"
                + (f"; first divergence: {where}" if where else ""))
    if rec.get("message"):
        return prefix + str(rec["message"])
    metrics = as_dict(rec.get("metrics"))
    return prefix + ", ".join(f"{k} {fmt(v)}" for k, v in list(metrics.items())[:2]) or status

def span(t0: float, t1: float) -> str:
    if not math.isfinite(t0):
        return "unknown"
    return utc(t0) + " – " + time.strftime("%H:%M:%S", time.gmtime(t1))


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
