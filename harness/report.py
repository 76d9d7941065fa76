"""The HTML parity report: one self-contained file (inline CSS and SVG, no script, no network)
rendered with Jinja2 from JSON-Lines records, from one run or merged from several machines.

Sections, top to bottom: summary (counts per target, environments, trend against a baseline),
parity matrix, cost of precision, latency, details of every failure, error and conflict.
Every string from a record reaches the page through Jinja2's autoescaping.

Record schema the report understands (everything else still shows, as a key/value table)
-----------------------------------------------------------------------------------------
Always: ``target``, ``case``, ``check``, ``status`` (pass|fail|error|skip; anything else is shown
as an error, never as a pass), ``message``, ``precision``, ``device``, ``environment`` (torch,
python, platform, cpu, hostname, git_commit), ``target_environment``, ``run_id``, ``time``.
Parity: ``metrics`` {name: number}, ``baseline`` {name: number} (eager fp32's error), ``gates``
[{metric, value, bound, baseline, passed, min_multiplier, min_tolerance, direction, reason}].
Optional sections light up when records carry them:

- ``histogram``: {log10_edges: [n+1], counts: [n]} of |target - fp64| (``abs_error_histogram``).
- ``greedy`` (check "greedy"): {first_divergence: token index or null, margin_at_first_divergence,
  tokens_checked, reference_text, target_text, reference_tokens, target_tokens, divergence_char:
  optional character offset of the divergence in both texts (else the texts' common prefix)}.
- Cost of precision, for targets whose precision is not fp32/fp64 or records with ``quality``:
  top-1 and KL from ``quality`` {top1_agreement, kl_mean, perplexity_ratio, ...} or from
  ``metrics`` of a "logits" or "quality" check (``metrics.ppl_ratio`` too); greedy divergence from
  ``greedy.first_divergence`` or top-level ``greedy_divergence_index`` (== ``greedy_steps``: none);
  the statuses of its checks (e.g. "arithmetic", "quality") are counted.
- ``property`` (Hypothesis checks): {example: shrunk example as text, repro: command line}; a
  top-level ``repro`` string is shown for any record.
- ``latency`` (check starting "latency"): {median_s, q1_s, q3_s, iqr_s, ratio_vs_eager, ratio_q1,
  ratio_q3 (whiskers; else the target's quartiles over eager's median), eager_median_s or
  eager: {median_s}, mfu, time_to_first_result_s, rounds}.

A target+case+check seen with different statuses (two machines, two runs) is a *conflict*: its
cell shows every status and its detail shows the records side by side; nothing is dropped.
Records with check "setup" and status "skip" (the plugin's record of a target that cannot run
here) make no row: their reason is shown once, at the target's column head.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from harness.records import read_records

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
STATUSES = ("error", "fail", "pass", "skip")
# Worst first: a cell with several records shows its worst status.
SEVERITY = {"error": 0, "fail": 1, "pass": 2, "skip": 3}
BAD = ("error", "fail")
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
    "repro", "golden_sha256",
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
        return prefix + f"{g.get('metric')} {fmt(number(g.get('value')))} {op} bound {fmt(number(g.get('bound')))}"
    if rec.get("message"):
        return prefix + str(rec["message"])
    metrics = as_dict(rec.get("metrics"))
    return prefix + ", ".join(f"{k} {fmt(v)}" for k, v in list(metrics.items())[:2]) or status


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
        conflict = len(statuses) > 1
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
        ("when", [_span(groups[s]["t0"], groups[s]["t1"]) for s in sources]),
        ("records", [str(groups[s]["count"]) for s in sources]),
    ]
    env_keys = sorted({k for g in groups.values() for k in g["env"]})
    rows += [(k, [fmt(groups[s]["env"].get(k)) for s in sources]) for k in env_keys]
    target_names = sorted({t for g in groups.values() for t in g["targets"]})
    rows += [(f"target {t}", [", ".join(f"{k}={fmt(v)}" for k, v in groups[s]["targets"].get(t, {}).items()) or "—"
                              for s in sources]) for t in target_names]
    return {"sources": sources, "rows": rows}


def _span(t0: float, t1: float) -> str:
    if not math.isfinite(t0):
        return "unknown"
    return _utc(t0) + " – " + time.strftime("%H:%M:%S", time.gmtime(t1))


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


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


# --- cost of precision and latency -----------------------------------------------------------
def _is_high_precision(precision: str) -> bool:
    return precision.startswith(("fp32", "fp64", "float32", "float64"))


def precision_cost(records: list[dict]) -> list[dict]:
    """Per low-precision or quantized target: the worst top-1 agreement, KL, perplexity ratio and
    earliest greedy divergence over its cases, each with the case it came from."""
    rows: dict[str, dict] = {}
    for rec in records:
        target, case, check = key_of(rec)
        precision = str(rec.get("precision") or "")
        quality = as_dict(rec.get("quality"))
        if _is_high_precision(precision) and not quality:
            continue
        row = rows.setdefault(target, {"target": target, "precision": precision, "top1": None, "kl": None,
                                       "ppl": None, "divergence": None, "greedy_checked": 0, "extra": {},
                                       "verdicts": Counter()})
        row["verdicts"][f"{check} {status_of(rec)}"] += 1
        metrics = as_dict(rec.get("metrics")) if check in ("logits", "quality") else {}
        top1 = number(quality.get("top1_agreement", metrics.get("top1_agreement")))
        kl = number(quality.get("kl_mean", metrics.get("kl_mean")))
        ppl = number(quality.get("perplexity_ratio", quality.get("ppl_ratio", metrics.get("ppl_ratio"))))
        if top1 is not None and (row["top1"] is None or top1 < row["top1"][0]):
            row["top1"] = (top1, case)
        if kl is not None and (row["kl"] is None or kl > row["kl"][0]):
            row["kl"] = (kl, case)
        if ppl is not None and (row["ppl"] is None or abs(ppl - 1) > abs(row["ppl"][0] - 1)):
            row["ppl"] = (ppl, case)
        for name, v in quality.items():
            if name not in ("top1_agreement", "kl_mean", "perplexity_ratio", "ppl_ratio"):
                row["extra"].setdefault(name, (v, case))
        greedy = as_dict(rec.get("greedy"))
        div: Any = None
        if greedy:
            row["greedy_checked"] += 1
            div = greedy.get("first_divergence")
        else:
            # Quantization quality records: the index equals greedy_steps when nothing diverged.
            index, steps = number(rec.get("greedy_divergence_index")), number(rec.get("greedy_steps"))
            if index is not None and math.isfinite(index):
                row["greedy_checked"] += 1
                div = index if steps is None or index < steps else None
        if (isinstance(div, (int, float)) and not isinstance(div, bool) and math.isfinite(div)
                and (row["divergence"] is None or div < row["divergence"][0])):
            row["divergence"] = (int(div), case)
    return sorted(rows.values(), key=lambda r: r["target"])


@dataclass
class LatencyBar:
    label: str
    target: str
    ratio: float
    lo: float | None
    hi: float | None
    median_s: float | None
    mfu: float | None
    first_result_s: float | None
    status: str
    short: str = ""
    y: float = 0.0
    x: float = 0.0
    w: float = 0.0
    x_lo: float = 0.0
    x_hi: float = 0.0


def latency_chart(records: list[dict], width: int = 640, bar_h: int = 18) -> dict | None:
    """Bars of ratio vs eager with IQR whiskers, in SVG coordinates (log-free linear axis with a
    reference line at 1x = eager)."""
    bars = []
    for rec in records:
        target, case, check = key_of(rec)
        lat = as_dict(rec.get("latency"))
        if not check.startswith("latency") or not lat:
            continue
        ratio, median = number(lat.get("ratio_vs_eager")), number(lat.get("median_s"))
        eager = number(lat.get("eager_median_s"))
        if eager is None and ratio and median:
            eager = median / ratio
        if eager is None:
            eager = number(as_dict(lat.get("eager")).get("median_s"))
        lo, hi = number(lat.get("ratio_q1")), number(lat.get("ratio_q3"))
        if lo is None or hi is None:
            # No IQR of the ratio itself: the target's own IQR over eager's median.
            q1, q3 = number(lat.get("q1_s")), number(lat.get("q3_s"))
            iqr = number(lat.get("iqr_s"))
            if (q1 is None or q3 is None) and iqr is not None and median is not None:
                q1, q3 = median - iqr / 2, median + iqr / 2
            lo, hi = (q1 / eager, q3 / eager) if eager and q1 is not None and q3 is not None else (None, None)
        bars.append(LatencyBar(f"{target} · {case}" + ("" if check == "latency" else f" · {check}"), target,
                               ratio if ratio is not None and math.isfinite(ratio) else math.nan, lo, hi, median,
                               number(lat.get("mfu")), number(lat.get("time_to_first_result_s")), status_of(rec)))
    if not bars:
        return None
    bars.sort(key=lambda b: b.label)
    finite = [v for b in bars for v in (b.ratio, b.hi) if v is not None and math.isfinite(v)]
    top = max(finite + [1.0]) * 1.1
    label_w, plot_w = 260, width - 260 - 60
    for i, b in enumerate(bars):
        # The SVG label column is 260 px wide; the table under the chart has the full label.
        b.short = b.label if len(b.label) <= 42 else b.label[:41] + "…"
        b.y = 24 + i * (bar_h + 6)
        b.x = label_w
        b.w = plot_w * b.ratio / top if math.isfinite(b.ratio) else 0.0
        if b.lo is not None and b.hi is not None:
            b.x_lo, b.x_hi = label_w + plot_w * max(b.lo, 0) / top, label_w + plot_w * min(b.hi, top) / top
    ticks = [{"x": label_w + plot_w * v / top, "label": fmt(v) + "x"} for v in _nice_ticks(top)]
    return {"bars": bars, "width": width, "height": 24 + len(bars) * (bar_h + 6) + 20, "bar_h": bar_h,
            "one_x": label_w + plot_w / top, "ticks": ticks, "label_w": label_w}


def _nice_ticks(top: float) -> list[float]:
    step = 10 ** math.floor(math.log10(top / 4)) if top > 0 else 1
    for mult in (1, 2, 5, 10):
        if top / (step * mult) <= 6:
            step *= mult
            break
    return [i * step for i in range(int(top / step) + 1)]


def histogram_svg(hist: Any, bounds: list[float], width: int = 520, height: int = 150) -> dict | None:
    """Bars of log10|target - fp64| counts, with the gate bounds drawn as lines."""
    if not isinstance(hist, dict):
        return None
    edges, counts = hist.get("log10_edges"), hist.get("counts")
    if not (isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1 and counts):
        return None
    edges_n, counts_n = [number(e) for e in edges], [number(c) for c in counts]
    edges_f = [e for e in edges_n if e is not None and math.isfinite(e)]
    counts_f = [c for c in counts_n if c is not None and math.isfinite(c)]
    if len(edges_f) != len(edges) or len(counts_f) != len(counts):
        return None
    lo, hi = edges_f[0], edges_f[-1]
    if not hi > lo:
        return None
    peak = max(max(counts_f), 1.0)
    left, bottom, plot_w, plot_h = 40, height - 24, width - 50, height - 40

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    bars = []
    for i, c in enumerate(counts_f):
        if not c:
            continue  # empty bins draw nothing; skipping them keeps big reports small
        h = plot_h * c / peak
        bars.append({"x": round(x_of(edges_f[i]), 1), "w": round(max(x_of(edges_f[i + 1]) - x_of(edges_f[i]) - 1, 1), 1),
                     "y": round(bottom - h, 1), "h": round(h, 1),
                     "title": f"1e{fmt(edges_f[i])} – 1e{fmt(edges_f[i + 1])}: {int(c)}"})
    ticks = [{"x": round(x_of(d), 1), "label": f"1e{d}"} for d in range(math.ceil(lo), math.floor(hi) + 1, 2)]
    lines = [{"x": round(x_of(math.log10(b)), 1), "label": f"bound {fmt(b)}"} for b in bounds
             if b > 0 and math.isfinite(b) and lo <= math.log10(b) <= hi]
    return {"bars": bars, "ticks": ticks, "lines": lines, "width": width, "height": height, "bottom": bottom,
            "left": left, "top": bottom - plot_h, "total": int(sum(counts_f))}


def greedy_view(greedy: dict) -> dict | None:
    ref, tgt = greedy.get("reference_text"), greedy.get("target_text")
    if not isinstance(ref, str) or not isinstance(tgt, str):
        return None
    cut = greedy.get("divergence_char")
    if not isinstance(cut, int) or isinstance(cut, bool) or not 0 <= cut <= min(len(ref), len(tgt)):
        cut = 0
        while cut < min(len(ref), len(tgt)) and ref[cut] == tgt[cut]:
            cut += 1
    same = ref == tgt
    return {"ref_head": ref[:cut], "ref_tail": ref[cut:], "tgt_head": tgt[:cut], "tgt_tail": tgt[cut:], "same": same}


def detail_view(rec: dict) -> dict:
    """Everything a failure's detail block shows, prepared for the template."""
    gates = [g for g in rec.get("gates") or [] if isinstance(g, dict)]
    bounds = [b for g in gates if g.get("metric") in ("max_abs", "rmse") for b in [number(g.get("bound"))] if b]
    greedy = as_dict(rec.get("greedy"))
    prop = as_dict(rec.get("property"))
    repro = rec.get("repro") or prop.get("repro")
    return {
        "rec": rec,
        "status": status_of(rec),
        "status_note": "" if rec.get("status") in SEVERITY else f"unknown status {rec.get('status')!r}",
        "source": source_of(rec),
        "gates": gates,
        "metrics": as_dict(rec.get("metrics")),
        "baseline": as_dict(rec.get("baseline")),
        "histogram": histogram_svg(rec.get("histogram"), bounds),
        "greedy": greedy,
        "greedy_text": greedy_view(greedy) if greedy else None,
        "greedy_rest": {k: v for k, v in greedy.items() if k not in ("reference_text", "target_text")},
        "quality": as_dict(rec.get("quality")),
        "latency": as_dict(rec.get("latency")),
        "property": {k: v for k, v in prop.items() if k != "repro"},
        "repro": repro if repro is None else str(repro),
        "run": {k: rec.get(k) for k in ("precision", "device", "policy", "config", "input_shape", "seed",
                                        "duration_s", "golden_sha256") if rec.get(k) not in (None, "", {})},
        "target_environment": as_dict(rec.get("target_environment")),
        "other": {k: v for k, v in rec.items() if k not in KNOWN_KEYS},
    }


# --- rendering -------------------------------------------------------------------------------
def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.globals["detail_view"] = detail_view
    return env


def render(records: list[dict], baseline: list[dict] | None = None, *, title: str = "GPT parity report",
           trend_threshold: float = DEFAULT_TREND_THRESHOLD, max_details: int = DEFAULT_MAX_DETAILS) -> str:
    """The report as one HTML string."""
    columns, rows, details = build_matrix(records)
    details_brief = [(d, key_metric(d.records[0])) for d in details[max_details:]]
    totals = Counter(status_of(r) for r in records)
    context = {
        "title": title,
        "generated": _utc(time.time()),
        "n_records": len(records),
        "totals": {s: totals.get(s, 0) for s in STATUSES},
        "statuses": STATUSES,
        "columns": columns,
        "rows": rows,
        "n_bad_rows": sum(r.bad for r in rows),
        "details": details[:max_details],
        "details_brief": details_brief,
        "n_details": len(details),
        "environments": environments(records),
        "trend": trend(records, baseline, trend_threshold) if baseline is not None else None,
        "precision": precision_cost(records),
        "latency": latency_chart(records),
        "moved_limit": 200,
    }
    return _environment().get_template("report.html.j2").render(**context)


def write_report(paths: Iterable[str | Path], out: str | Path, baseline_paths: Iterable[str | Path] | None = None,
                 *, title: str = "GPT parity report", trend_threshold: float = DEFAULT_TREND_THRESHOLD,
                 max_details: int = DEFAULT_MAX_DETAILS) -> Path:
    """Read records (files or directories), render, write ``out``; returns its path."""
    records = load_records(paths)
    baseline = load_records(baseline_paths) if baseline_paths else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(records, baseline, title=title, trend_threshold=trend_threshold, max_details=max_details),
                   encoding="utf-8")
    return out


def write_session_report(report_dir: Path, run_id: str) -> str:
    """Render ``report_dir/parity.html`` from this run's record files (every xdist worker's).
    Returns the path written, "" when the run wrote no record, or a "failed: ..." line: a broken
    report must not hide the run's test results, but it is never silent either."""
    files = sorted(report_dir.glob(f"records-{run_id}-*.jsonl"))
    if not files:
        return ""
    try:
        return str(write_report(files, report_dir / "parity.html", title=f"GPT parity report · run {run_id}"))
    except Exception as exc:  # noqa: BLE001  (reported in the terminal summary, never swallowed)
        return f"failed to write {report_dir / 'parity.html'}: {type(exc).__name__}: {exc}"
