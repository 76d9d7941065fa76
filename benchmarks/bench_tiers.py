"""How long the tiers take, and where the time goes: the benchmark behind the README's figures.

    python benchmarks/bench_tiers.py [--tier cpu] [--tier ci] [--one-check N] [--pytest-args ...]

Runs each tier as its own pytest process from the repository root, exactly as a user would:

- ``cpu``: ``pytest -m cpu -n auto --dist loadgroup`` (the README's first command, default profile);
- ``cpu-serial``: ``pytest -m cpu``, the same checks in one process;
- ``ci``: ``pytest --slow --hypothesis-profile=conformance-ci -n auto --dist loadgroup`` (what ``.ci/run`` runs).

(``--one-check N``: also N paired runs of one check from the command line,
``pytest cases/test_parity.py --target export -k "nanochat-seed and loss"``, against the same check
as a plain script, ``benchmarks/plain_check.py``, with the medians and their ratio)

and prints, per tier: the wall time and the outcome counts; the ten slowest tests and the
seconds per test function (JUnit XML);
and the seconds each target spent per phase (``prepare``: compile or export; ``run``: its calls;
``reference``: the fp64 and same-dtype references judged against), from the ``timings-*.json``
the plugin writes beside the records; and the records by kind (check and status) and by target
(status), so that a change that claims to keep every check can be compared before and after. Measure on a quiet machine, and say its load with the
figures: ``os.getloadavg()`` is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARALLEL = ["-n", "auto", "--dist", "loadgroup"]
TIERS = {"cpu": ["-m", "cpu", *PARALLEL], "cpu-serial": ["-m", "cpu"], "ci": ["--slow", "--hypothesis-profile=conformance-ci", *PARALLEL]}


def run_tier(name: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        junit, reports = Path(tmp) / "junit.xml", Path(tmp) / "reports"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TIERS[name], *extra,
               f"--junitxml={junit}", f"--report-dir={reports}"]
        env = {k: v for k, v in os.environ.items() if k != "GPT_CONFORMANCE_RUN_ID"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        tests = [(case.get("classname", "") + "::" + case.get("name", ""), float(case.get("time", 0)))
                 for case in ET.parse(junit).getroot().iter("testcase")] if junit.exists() else []
        phases: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for path in reports.glob("timings-*.json"):
            for row in json.loads(path.read_text()):
                phases[row["target"]][row["phase"]] += row["seconds"]
        by_kind, by_target = record_counts(reports)
    summary = next((line for line in reversed(proc.stdout.splitlines()) if " in " in line and "=" not in line[:1]), "")
    return {"tier": name, "command": " ".join(["pytest", *TIERS[name], *extra]), "rc": proc.returncode,
            "wall_s": wall, "summary": summary.strip("= "), "tests": tests, "phases": phases,
            "by_kind": by_kind, "by_target": by_target}


def record_counts(reports: Path) -> tuple[Counter, Counter]:
    """Records per (check, status) and per (target, status), over every record file of the run."""
    by_kind: Counter = Counter()
    by_target: Counter = Counter()
    for path in reports.glob("records-*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            by_kind[(str(record.get("check")), str(record.get("status")))] += 1
            by_target[(str(record.get("target")), str(record.get("status")))] += 1
    return by_kind, by_target


def print_counts(title: str, counts: Counter) -> None:
    statuses = sorted({status for _, status in counts})
    print(f"records by {title}:")
    print(f"  {title:<24} " + " ".join(f"{s:>8}" for s in statuses))
    for name in sorted({name for name, _ in counts}):
        print(f"  {name:<24} " + " ".join(f"{counts[(name, s)]:>8}" for s in statuses))


def report(result: dict) -> None:
    print(f"\n== {result['tier']}: {result['command']}")
    print(f"wall {result['wall_s']:.1f} s, exit {result['rc']}: {result['summary']}")
    print("ten slowest tests:")
    for name, seconds in sorted(result["tests"], key=lambda t: -t[1])[:10]:
        print(f"  {seconds:8.2f} s  {name}")
    per_function: Counter = Counter()
    items: Counter = Counter()
    for name, seconds in result["tests"]:
        per_function[name.split("[", 1)[0]] += seconds
        items[name.split("[", 1)[0]] += 1
    print(f"seconds per test function, summed over its items (all: {sum(per_function.values()):.1f} s):")
    for name, seconds in per_function.most_common(15):
        print(f"  {seconds:8.2f} s  {items[name]:5d} items  {name}")
    print("seconds per target and phase (prepare = compile or export; run = its calls; reference = fp64 and "
          "same-dtype references):")
    print(f"  {'target':<24} {'prepare':>9} {'run':>9} {'reference':>10}")
    for target, phases in sorted(result["phases"].items(), key=lambda kv: -sum(kv[1].values())):
        print(f"  {target:<24} {phases.get('prepare', 0):9.2f} {phases.get('run', 0):9.2f} "
              f"{phases.get('reference', 0):10.2f}")
    print_counts("check", result["by_kind"])
    print_counts("target", result["by_target"])


ONE_CHECK = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "cases/test_parity.py", "--target", "export",
             "-k", "nanochat-seed and loss"]


def one_check(repeats: int) -> None:
    """Paired runs, alternating, so that a change of load hits both sides alike."""
    seconds: dict[str, list[float]] = {"pytest": [], "script": []}
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"pytest": [sys.executable, *ONE_CHECK, f"--report-dir={tmp}"],
                    "script": [sys.executable, str(ROOT / "benchmarks" / "plain_check.py")]}
        for _ in range(repeats):
            for name, cmd in commands.items():
                start = time.perf_counter()
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
                seconds[name].append(time.perf_counter() - start)
                if proc.returncode:
                    print(f"one check: {name} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    pytest_s, script_s = (sorted(v)[len(v) // 2] for v in seconds.values())
    print(f"\n== one check: {' '.join(['pytest', *ONE_CHECK[2:]])} against benchmarks/plain_check.py")
    print(f"median of {repeats}: pytest {pytest_s:.2f} s, plain script {script_s:.2f} s: {pytest_s / script_s:.2f}x "
          f"(pytest {', '.join(f'{s:.2f}' for s in seconds['pytest'])}; script "
          f"{', '.join(f'{s:.2f}' for s in seconds['script'])})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tier", action="append", choices=sorted(TIERS), help="repeatable; default: cpu and ci (none with --one-check)")
    parser.add_argument("--one-check", type=int, default=0, metavar="N",
                        help="also time one check N times from the command line against a plain script")
    parser.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="passed on to every pytest run")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    results = [run_tier(name, args.pytest_args) for name in args.tier or ([] if args.one_check else ["cpu", "ci"])]
    for result in results:
        report(result)
    if args.one_check:
        one_check(args.one_check)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return max((r["rc"] for r in results), default=0)


if __name__ == "__main__":
    raise SystemExit(main())
