"""Report layer: the inline SVG charts (latency ratios, error histograms) and the greedy text view."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gpt_conformance.harness.report.records_view import as_dict, fmt, key_of, number, status_of


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


def localization_svg(localization: Any, width: int = 520, height: int = 236) -> dict | None:
    """Each intermediate's (or truncated model's) error against fp64 on a log axis, with eager
    fp32's error there and the bound, the first divergence marked (``gpt_conformance.harness.checks.localize``)."""
    points = [p for p in as_dict(localization).get("points") or [] if isinstance(p, dict)]
    if not points:
        return None
    values = [number(v) for p in points for v in (p.get("value"), p.get("eager"), p.get("bound"))]
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    lo = math.floor(math.log10(min(positive))) if positive else -16
    hi = math.ceil(math.log10(max(positive))) if positive else 0
    hi = max(hi, lo + 1)
    # Room on the left and below for the names, written at -45 degrees under their points.
    left, bottom, plot_w, plot_h = 90, height - 100, width - 110, height - 116
    step = plot_w / max(len(points) - 1, 1)

    def y_of(value: Any) -> float | None:
        v = number(value)
        if v is None or math.isnan(v):
            return None
        v = 10.0 ** hi if math.isinf(v) else max(v, 10.0 ** lo)  # zero: eager exact, drawn on the floor
        return round(bottom - plot_h * (math.log10(v) - lo) / (hi - lo), 1)

    drawn, ticks, marker = [], [], None
    for i, p in enumerate(points):
        name, x = str(p.get("name", "")), round(left + i * step, 1)
        label = _tick_label(name, len(points))
        if label:
            ticks.append({"x": x, "y": bottom + 10, "label": label})
        if p.get("first") and marker is None:
            marker = {"x": x, "label": name}
        drawn.append({"x": x, "y": y_of(p.get("value")), "eager": y_of(p.get("eager")), "bound": y_of(p.get("bound")),
                      "status": "pass" if p.get("status") == "pass" else "fail",
                      "title": f"{name}: {p.get('metric', 'error')} {fmt(number(p.get('value')))} (eager fp32 "
                               f"{fmt(number(p.get('eager')))}, bound {fmt(number(p.get('bound')))}) {p.get('status')}"})

    def path(key: str) -> str:
        return " ".join(f"{'M' if j == 0 else 'L'}{d['x']},{d[key]}" for j, d in enumerate(d for d in drawn if d[key] is not None))

    grid = [{"y": y_of(10.0 ** d), "label": f"1e{d}"} for d in range(lo, hi + 1, max(1, (hi - lo) // 5))]
    return {"points": drawn, "ticks": ticks, "grid": grid, "marker": marker, "target_path": path("y"),
            "eager_path": path("eager"), "width": width, "height": height, "left": left, "bottom": bottom,
            "top": bottom - plot_h, "metric": str(points[-1].get("metric", "error"))}


def _tick_label(name: str, n_points: int) -> str:
    """Every point is labelled when there are few; otherwise the embeddings, each block (at its
    attention output) and the head, so a GPT-2-sized chart stays legible."""
    if n_points <= 12:
        return name
    if name.endswith(".attn"):
        return name.removesuffix(".attn")
    return name if name in ("embed", "final_norm", "logits") else ""
