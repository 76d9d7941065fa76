"""Synthetic records shaped like the harness writes them, for the report's tests and benchmark.

The shapes follow ``harness/checks/session.py::ConformanceSession.record`` and the optional sections
that ``harness/report/render.py``'s docstring defines (greedy, quality, property, latency, histogram).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

ENVIRONMENT = {"torch": "2.13.0+cpu", "python": "3.11.7", "platform": "Linux-x86_64", "machine": "x86_64",
               "cpu": "AMD EPYC", "cpu_count": 2, "hostname": "cpu-runner", "git_commit": "0" * 40}


def gate(metric: str, value: float, bound: float, baseline: float | None = 1e-7) -> dict[str, Any]:
    return {"metric": metric, "value": value, "bound": bound, "baseline": baseline, "passed": value <= bound,
            "min_multiplier": value / baseline if baseline else None, "min_tolerance": value, "direction": "max",
            "reason": "2x eager fp32's error"}


def record(target: str = "eager", case: str = "seed", check: str = "logits", status: str = "pass",
           host: str = "cpu-runner", run_id: str = "20260101T000000", **fields: Any) -> dict[str, Any]:
    """A parity record; ``fields`` replace or add top-level keys."""
    bad = status == "fail"
    rmse = 3e-3 if bad else 4e-8
    rec: dict[str, Any] = {
        "schema": 1, "run_id": run_id, "time": 1767225600.0, "target": target, "precision": "fp32", "device": "cpu",
        "case": case, "check": check, "config": {"n_layer": 2, "n_head": 4, "n_embd": 64}, "input_shape": [2, 16],
        "seed": 0, "status": status, "policy": "fp32", "message": "out of tolerance: rmse" if bad else "",
        "metrics": {"rmse": rmse, "max_abs": rmse * 10, "top1_agreement": 1.0, "kl_mean": 1e-12},
        "baseline": {"rmse": 4e-8, "max_abs": 4e-7},
        "gates": [gate("rmse", rmse, 1.8e-6, 4e-8)] if status in ("pass", "fail") else [],
        "duration_s": 0.01, "target_environment": {}, "environment": {**ENVIRONMENT, "hostname": host},
    }
    if status == "skip":
        rec.update(metrics={}, baseline={}, message=fields.pop("message", "needs a GPU"))
    rec.update(fields)
    return rec


def histogram(peak_decade: int = -3) -> dict[str, list[float]]:
    edges = [-16.0 + 0.75 * i for i in range(25)]
    counts = [float(max(0, 500 - 120 * abs(e - peak_decade))) for e in edges[:-1]]
    return {"log10_edges": edges, "counts": counts}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def nightly(n_records: int, n_targets: int = 10, fail_fraction: float = 0.05, seed: int = 0) -> list[dict]:
    """A night's worth of records: ``n_targets`` columns, failures with histograms, latency and
    greedy records mixed in, as a big merged report would see them."""
    rng = random.Random(seed)
    targets = [f"target-{i}" for i in range(n_targets)]
    records = []
    for i in range(n_records):
        target = targets[i % n_targets]
        case = f"case-{i // (2 * n_targets):04d}"
        check = "logits" if (i // n_targets) % 2 == 0 else "loss"
        status = "fail" if rng.random() < fail_fraction else "pass"
        extra: dict[str, Any] = {}
        if status == "fail":
            extra["histogram"] = histogram(rng.randint(-8, -2))
        if i % 97 == 0:
            check = "greedy"
            extra["greedy"] = {"first_divergence": 7 if status == "fail" else None, "margin": 0.2,
                               "tokens_compared": 32, "reference_text": "To be, or not to be: that is",
                               "target_text": "To be, or not to be: that was" if status == "fail" else
                               "To be, or not to be: that is"}
        if i % 101 == 0:
            check = "latency"
            extra["latency"] = {"median_s": 0.02, "q1_s": 0.019, "q3_s": 0.022, "ratio_vs_eager": 1 + rng.random(),
                                "mfu": 0.1, "time_to_first_result_s": 1.5}
        records.append(record(target, case, check, status, **extra))
    return records
