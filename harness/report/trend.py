"""Report layer: the trend against a baseline run: new failures, fixes and metrics that moved."""

from __future__ import annotations

import math
from typing import Any

from gpt_conformance.harness.report.records_view import (
    BAD,
    DEFAULT_TREND_THRESHOLD,
    SEVERITY,
    TREND_ABS_FLOOR,
    anchor,
    as_dict,
    key_metric,
    key_of,
    number,
    source_of,
    status_of,
)


# --- trend -----------------------------------------------------------------------------------
def _worst_by_key(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    out: dict[tuple[str, str, str], dict] = {}
    for rec in records:
        k = key_of(rec)
        if k[2] == "setup":
            continue
        if k not in out or SEVERITY[status_of(rec)] < SEVERITY[status_of(out[k])]:
            out[k] = rec
    return out


def _flat_numbers(rec: dict) -> dict[str, float]:
    values = {}
    for section in ("metrics", "latency", "quality"):
        for name, v in as_dict(rec.get(section)).items():
            x = number(v)
            if x is not None:
                values[name if section == "metrics" else f"{section}.{name}"] = x
    return values


def trend(current: list[dict], baseline: list[dict], threshold: float = DEFAULT_TREND_THRESHOLD) -> dict:
    """New failures, fixes and metrics that moved by more than ``threshold`` (relative) since
    ``baseline``; keys present in only one side are counted, not hidden."""
    cur, base = _worst_by_key(current), _worst_by_key(baseline)
    new_failures: list[dict[str, Any]] = []
    fixes: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    for k, rec in cur.items():
        now = status_of(rec)
        before = status_of(base[k]) if k in base else None
        if now in BAD and before not in BAD:
            new_failures.append({"key": k, "now": now, "before": before or "absent", "anchor": anchor(k),
                                 "what": key_metric(rec)})
        elif now == "pass" and before in BAD:
            fixes.append({"key": k, "now": now, "before": before})
        if k in base:
            old_values = _flat_numbers(base[k])
            for name, new in _flat_numbers(rec).items():
                old = old_values.get(name)
                if old is None:
                    continue
                if math.isnan(old) != math.isnan(new) or math.isinf(old) != math.isinf(new):
                    rel = math.inf
                elif not (math.isfinite(old) and math.isfinite(new)):
                    continue
                else:
                    scale = max(abs(old), abs(new))
                    if scale <= TREND_ABS_FLOOR:
                        continue
                    rel = abs(new - old) / scale
                if rel > threshold:
                    moved.append({"key": k, "metric": name, "old": old, "new": new, "rel": rel})
    moved.sort(key=lambda m: (-m["rel"], m["key"], m["metric"]))
    return {
        "new_failures": sorted(new_failures, key=lambda f: f["key"]),
        "fixes": sorted(fixes, key=lambda f: f["key"]),
        "moved": moved,
        "threshold": threshold,
        "only_current": len(cur.keys() - base.keys()),
        "only_baseline": len(base.keys() - cur.keys()),
        # A whole target gone since the baseline usually means a machine did not report.
        "gone_targets": sorted({k[0] for k in base} - {k[0] for k in cur}),
        "baseline_records": len(baseline),
        "baseline_sources": sorted({source_of(r) for r in baseline}),
    }
