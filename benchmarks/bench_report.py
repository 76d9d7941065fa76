"""How long the parity report takes to render, and how big it gets, for a large merged night.

    python benchmarks/bench_report.py [--records 10000] [--fail-fraction 0.05] [--repeat 3]

Synthetic records (``tests/report_records.py::nightly``): 10 targets as columns, failures with
error histograms and gates, greedy and latency records mixed in. Prints the best of ``--repeat``
wall times for ``render`` and for reading the records back from JSON Lines, and the file size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_conformance.harness.report.records_view import load_records
from gpt_conformance.harness.report.render import render

from tests.report_records import nightly, write_jsonl


def best_of(repeat: int, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--fail-fraction", type=float, default=0.05)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    records = nightly(args.records, fail_fraction=args.fail_fraction)
    baseline = nightly(args.records, fail_fraction=args.fail_fraction, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "records.jsonl", records)
        read_s, _ = best_of(args.repeat, lambda: load_records([path]))
    render_s, page = best_of(args.repeat, lambda: render(records))
    trend_s, page_trend = best_of(args.repeat, lambda: render(records, baseline))
    failures = sum(r["status"] == "fail" for r in records)
    print(f"{len(records)} records ({failures} failing, with histograms), best of {args.repeat}:")
    print(f"  read JSON Lines      {read_s:6.2f} s")
    print(f"  render               {render_s:6.2f} s   {len(page.encode()) / 1e6:5.2f} MB")
    print(f"  render with baseline {trend_s:6.2f} s   {len(page_trend.encode()) / 1e6:5.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
