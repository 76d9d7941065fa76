"""Report layer: the HTML parity report: one self-contained file (inline CSS and SVG, no script, no network)
rendered with Jinja2 from JSON-Lines records, from one run or merged from several machines.

Sections, top to bottom: summary (counts per target, environments, trend against a baseline),
parity matrix, cost of precision, decode path, latency, details of every failure, error and conflict.
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
- ``localization`` (a failing named-case parity check; ``gpt_conformance.harness.checks.localize``): {method,
  summary, first_divergence, depth_independent, points: [{name, status, metric, value, eager,
  bound, first?, blocks?, seconds?}], skipped, notes}: drawn as a per-layer error chart.
- ``greedy`` (check "greedy"): {first_divergence: token index or null, margin_at_first_divergence,
  tokens_checked, reference_text, target_text, reference_tokens, target_tokens, divergence_char:
  optional character offset of the divergence in both texts (else the texts' common prefix)}.
- Cost of precision, for targets whose precision is not fp32/fp64 or records with ``quality``:
  top-1 and KL from ``quality`` {top1_agreement, kl_mean, perplexity_ratio, ...} or from
  ``metrics`` of a "logits" or "quality" check (``metrics.ppl_ratio`` too); greedy divergence from
  ``greedy.first_divergence`` or top-level ``greedy_divergence_index`` (== ``greedy_steps``: none);
  the statuses of its checks (e.g. "arithmetic", "quality") are counted.
- ``decode`` (checks "decode", "decode-full"): {calls, max_abs, eager_max_abs, first_diverging}:
  the decode section, each call's error beside eager's (``gpt_conformance.harness.report.decode_view``).
- ``property`` (Hypothesis checks): {example: shrunk example as text, repro: command line}; a
  top-level ``repro`` string is shown for any record.
- ``latency`` (check starting "latency"): {median_s, q1_s, q3_s, iqr_s, ratio_vs_eager, ratio_q1,
  ratio_q3 (whiskers; else the target's quartiles over eager's median), eager_median_s or
  eager: {median_s}, mfu, time_to_first_result_s, rounds}.

A target+case+check seen with different statuses for the same thing checked (two machines, two
runs) is a *conflict*: its cell shows every status and its detail shows the records side by side;
nothing is dropped. Property records are per Hypothesis example (their ``example`` field): two
examples with different statuses are two checks, not a conflict.
Records with check "setup" and status "skip" (the plugin's record of a target that cannot run
here) make no row: their reason is shown once, at the target's column head.
"""


from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from gpt_conformance.harness.report.charts import greedy_view, histogram_svg, latency_chart, localization_svg
from gpt_conformance.harness.report.decode_view import decode_section
from gpt_conformance.harness.report.matrix import build_matrix, environments
from gpt_conformance.harness.report.precision_cost import precision_cost
from gpt_conformance.harness.report.records_view import (
    DEFAULT_MAX_DETAILS,
    DEFAULT_TREND_THRESHOLD,
    KNOWN_KEYS,
    SEVERITY,
    STATUSES,
    as_dict,
    fmt,
    key_metric,
    load_records,
    number,
    source_of,
    status_of,
    utc,
)
from gpt_conformance.harness.report.trend import trend
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def detail_view(rec: dict) -> dict:
    """Everything a failure's detail block shows, prepared for the template."""
    gates = [g for g in rec.get("gates") or [] if isinstance(g, dict)]
    bounds = [b for g in gates if g.get("metric") in ("max_abs", "rmse") for b in [number(g.get("bound"))] if b]
    greedy = as_dict(rec.get("greedy"))
    prop = as_dict(rec.get("property"))
    localization = as_dict(rec.get("localization"))
    points = [p for p in localization.get("points") or [] if isinstance(p, dict)]
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
        "localization": localization,
        "localization_chart": localization_svg(localization),
        "localization_rows": [{k: p.get(k) for k in ("name", "status", "metric", "value", "eager", "bound")}
                              for p in points],
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
        "generated": utc(time.time()),
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
        "decode": decode_section(records),
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
