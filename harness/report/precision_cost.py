"""Report layer: what each low-precision or quantized target's precision costs, read from records."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from gpt_conformance.harness.report.records_view import as_dict, key_of, number, status_of


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


# The quality metrics of ``python -m gpt_conformance precision``: (heading, as docs/precision.md names
# them; the key in a quality record's metrics).
COST_COLUMNS = (("max error / range", "max_rel"), ("top-1", "top1_agreement"), ("mean KL", "kl_mean"),
                ("PPL ratio", "ppl_ratio"), ("greedy divergence index", "greedy_divergence_index"))
NOT_RECORDED = "-"


def precision_cost_rows(records: list[dict]) -> list[dict]:
    """One row per (target, case) from ``quality`` records: what each precision costs, with the
    arithmetic verdict of the same target and case beside it. Statuses are the records' own
    (pass, fail, error, skip, recorded, or whatever a record says); a missing one is ``-``. Where
    records of several runs are read, the last record of a (target, case) wins."""
    arithmetic = {(r.get("target"), r.get("case")): r.get("status") for r in records if r.get("check") == "arithmetic"}
    rows = {}
    for r in records:
        if r.get("check") != "quality":
            continue
        key = (r.get("target"), r.get("case"))
        metrics = as_dict(r.get("metrics"))
        rows[key] = {"target": r.get("target"), "precision": r.get("precision"), "case": r.get("case"),
                     "arithmetic": arithmetic.get(key), "quality": r.get("status"),
                     **{heading: metrics.get(key) for heading, key in COST_COLUMNS}}
    return sorted(rows.values(), key=lambda row: (str(row["precision"] or ""), str(row["target"]), str(row["case"])))


def precision_cost_table(records: list[dict]) -> str:
    """``precision_cost_rows`` as aligned text, numbers to 4 significant digits, ``-`` for a value
    no record holds; empty when there are no quality records."""
    rows = precision_cost_rows(records)
    if not rows:
        return ""
    header = ["target", "case", "arithmetic", "quality", *(heading for heading, _ in COST_COLUMNS)]
    cells = [[NOT_RECORDED if row[h] is None else f"{row[h]:.4g}" if isinstance(row[h], float) else str(row[h])
              for h in header] for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def aligned(line: list[str]) -> str:  # names and statuses to the left, numbers to the right
        return "  ".join(c.ljust(widths[i]) if i < 4 else c.rjust(widths[i]) for i, c in enumerate(line)).rstrip()

    return "\n".join(aligned(line) for line in [header, *cells])
