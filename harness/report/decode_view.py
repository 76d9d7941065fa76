"""Report layer: the decode section: each target's error per decode call beside eager's, read from records.

Reads the ``decode`` field of "decode" and "decode-full" records (``gpt_conformance.harness.checks.decode_checks``):
``calls`` (prefill, step 1, ...), ``max_abs`` (the target's max error against the fp64 truth on
each call) and ``eager_max_abs`` (eager fp32's, the yardstick). Targets whose decode records are
skips (no decoder) are listed with the reason.
"""

from __future__ import annotations

from gpt_conformance.harness.report.records_view import as_dict, key_of, number, status_of

DECODE_CHECKS = ("decode", "decode-full")


def decode_section(records: list[dict]) -> dict:
    """{"rows": [{target, case, check, status, calls: [(call, error, eager error, ratio)]}],
    "without": {target: reason}} for the report's decode section."""
    rows, without = [], {}
    for rec in records:
        target, case, check = key_of(rec)
        if check not in DECODE_CHECKS:
            continue
        decode = as_dict(rec.get("decode"))
        if status_of(rec) == "skip" or not decode:
            if status_of(rec) == "skip":
                without.setdefault(target, str(rec.get("message") or ""))
            continue
        calls = []
        for name, error, eager in zip(decode.get("calls") or [], decode.get("max_abs") or [],
                                      decode.get("eager_max_abs") or [], strict=False):
            error, eager = number(error), number(eager)
            ratio = error / eager if error is not None and eager else None
            calls.append((str(name), error, eager, ratio))
        rows.append({"target": target, "case": case, "check": check, "status": status_of(rec), "calls": calls,
                     "first_diverging": decode.get("first_diverging")})
    decoding = {row["target"] for row in rows}
    rows.sort(key=lambda r: (r["target"], r["case"], r["check"]))
    return {"rows": rows, "without": {t: m for t, m in sorted(without.items()) if t not in decoding}}
