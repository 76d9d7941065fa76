"""Report layer: what each low-precision or quantized target's precision costs, read from records."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from harness.report.records_view import as_dict, key_of, number, status_of


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


COST_COLUMNS = ("max_rel", "top1_agreement", "kl_mean", "ppl_ratio", "greedy_divergence_index")


def precision_cost_rows(records: list[dict]) -> list[dict]:
    """One row per (target, case) from ``quality`` records: what each precision costs, with the
    arithmetic verdict of the same target and case beside it. Where records of several runs are
    read, the last record of a (target, case) wins."""
    arithmetic = {(r["target"], r["case"]): r["status"] for r in records if r.get("check") == "arithmetic"}
    rows = {}
    for r in records:
        if r.get("check") != "quality":
            continue
        key = (r["target"], r["case"])
        metrics = r.get("metrics") or {}
        rows[key] = {"target": r["target"], "precision": r.get("precision"), "case": r["case"],
                     "arithmetic": arithmetic.get(key, "-"), "quality": r["status"],
                     **{c: metrics.get(c) for c in COST_COLUMNS}}
    return sorted(rows.values(), key=lambda row: (row["precision"] or "", row["target"], row["case"]))
