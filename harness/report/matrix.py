"""Report layer: the parity matrix (a row per case and check, a column per target, a cell per
status) and the detail blocks of failures, errors and conflicts; also the environments seen."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from gpt_conformance.harness.report.records_view import (
    BAD,
    SEVERITY,
    anchor,
    as_dict,
    fmt,
    key_metric,
    key_of,
    number,
    source_of,
    span,
    status_of,
)


# --- view model ------------------------------------------------------------------------------
@dataclass
class Cell:
    records: list[dict]
    status: str
    conflict: bool
    title: str
    anchor: str | None
    segments: list[str]


@dataclass
class Row:
    case: str
    check: str
    cells: list[Cell | None]
    bad: bool


@dataclass
class Column:
    target: str
    precision: str
    device: str
    counts: Counter
    skip_reason: str | None
    skip_note: str | None


@dataclass
class Detail:
    anchor: str
    target: str
    case: str
    check: str
    status: str
    conflict: bool
    records: list[dict] = field(default_factory=list)


def _target_sort_key(target: str, device: str) -> tuple:
    return ({"cpu": 0, "cuda": 1, "neuron": 2}.get(device, 3), target != "eager", target)


def disagree(records: list[dict]) -> bool:
    """Whether records of one target, case and check disagree about the same thing checked: a
    conflict (two machines or two runs). Property checks record one record per Hypothesis example
    (its ``example`` field), and two examples, one passing and one skipped, are two checks, not a
    conflict."""
    by_example: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        by_example[json.dumps(rec.get("example"), sort_keys=True, default=str)].add(status_of(rec))
    return any(len(statuses) > 1 for statuses in by_example.values())


def build_matrix(records: list[dict]) -> tuple[list[Column], list[Row], list[Detail]]:
    by_key: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    setup_skips: dict[str, list[dict]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    counts: dict[str, Counter] = defaultdict(Counter)
    for rec in records:
        target, case, check = key_of(rec)
        meta.setdefault(target, (str(rec.get("precision") or ""), str(rec.get("device") or "")))
        counts[target][status_of(rec)] += 1
        if check == "setup" and status_of(rec) == "skip":
            setup_skips[target].append(rec)
        else:
            by_key[(target, case, check)].append(rec)
    targets = sorted(meta, key=lambda t: _target_sort_key(t, meta[t][1]))
    has_rows = {t for t, _, _ in by_key}
    columns = []
    for t in targets:
        reasons = Counter(str(r.get("message") or "skipped") for r in setup_skips[t])
        all_skipped = t not in has_rows or all(status_of(r) == "skip" for k, rs in by_key.items() if k[0] == t for r in rs)
        if not reasons and all_skipped:
            reasons = Counter(str(r.get("message") or "skipped") for k, rs in by_key.items() if k[0] == t for r in rs)
        reason = reasons.most_common(1)[0][0] if reasons and all_skipped else None
        note = None
        if reasons and not all_skipped:
            note = f"{sum(reasons.values())} test(s) skipped: " + "; ".join(reasons)
        columns.append(Column(t, meta[t][0], meta[t][1], counts[t], reason, note))
    index = {t: i for i, t in enumerate(targets)}
    rows_by_case: dict[tuple[str, str], list[Cell | None]] = {}
    details: list[Detail] = []
    for (target, case, check), recs in sorted(by_key.items(), key=lambda kv: (kv[0][1], kv[0][2], index[kv[0][0]])):
        statuses = sorted({status_of(r) for r in recs}, key=SEVERITY.__getitem__)
        worst = statuses[0]
        conflict = disagree(recs)
        recs = sorted(recs, key=lambda r: (SEVERITY[status_of(r)], source_of(r)))
        needs_detail = worst in BAD or conflict
        a = anchor((target, case, check))
        title = f"{target} · {case} · {check}: {worst}"
        if len(recs) > 1:
            title += f" ({', '.join(f'{n} {s}' for s, n in Counter(status_of(r) for r in recs).items())})"
        title += " — " + key_metric(recs[0])
        cell = Cell(recs, worst, conflict, title, a if needs_detail else None, statuses)
        row = rows_by_case.setdefault((case, check), [None] * len(targets))
        row[index[target]] = cell
        if needs_detail:
            details.append(Detail(a, target, case, check, worst, conflict, recs))
    rows = [Row(case, check, cells, any(c is not None and (c.status in BAD or c.conflict) for c in cells))
            for (case, check), cells in rows_by_case.items()]
    details.sort(key=lambda d: (index[d.target], d.case, d.check))
    return columns, rows, details


def environments(records: list[dict]) -> dict:
    """One column per machine+run: when, how many records, versions, platform, commit, and one row
    per target with that target's versions."""
    groups: dict[str, dict] = {}
    for rec in records:
        src = source_of(rec)
        g = groups.setdefault(src, {"env": {}, "targets": {}, "t0": math.inf, "t1": -math.inf, "count": 0})
        g["count"] += 1
        for k, v in as_dict(rec.get("environment")).items():
            g["env"].setdefault(k, v)
        t = number(rec.get("time"))
        if t is not None and math.isfinite(t):
            g["t0"], g["t1"] = min(g["t0"], t), max(g["t1"], t)
        tenv = as_dict(rec.get("target_environment"))
        if tenv:
            g["targets"].setdefault(key_of(rec)[0], tenv)
    sources = sorted(groups)
    rows: list[tuple[str, list[str]]] = [
        ("when", [span(groups[s]["t0"], groups[s]["t1"]) for s in sources]),
        ("records", [str(groups[s]["count"]) for s in sources]),
    ]
    env_keys = sorted({k for g in groups.values() for k in g["env"]})
    rows += [(k, [fmt(groups[s]["env"].get(k)) for s in sources]) for k in env_keys]
    target_names = sorted({t for g in groups.values() for t in g["targets"]})
    rows += [(f"target {t}", [", ".join(f"{k}={fmt(v)}" for k, v in groups[s]["targets"].get(t, {}).items()) or "—"
                              for s in sources]) for t in target_names]
    return {"sources": sources, "rows": rows}
