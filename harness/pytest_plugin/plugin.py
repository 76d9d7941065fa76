"""Pytest glue: the pytest plugin: options, target registration and parametrization, hardware gating, records.

Loaded by the ``pytest11`` entry point, wherever pytest starts. Options are checked once at start
(``gpt_conformance.harness.pytest_plugin.validate``). Every test that takes a ``target`` argument is
parametrized over the selected targets and carries the target's hardware marker (``cpu``,
``gpu``, ``trn1``). Whether a target can run here is probed when the test is set up, never at
collection, and a target that cannot run skips with its probe's exact reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from gpt_conformance.harness.checks.localize import Budget
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.harness.core.targets import Target, registry
from gpt_conformance.harness.pytest_plugin import hookspecs, profiles  # noqa: F401  (profiles registers Hypothesis settings)
from gpt_conformance.harness.pytest_plugin.collection import targets_for, without_tests
from gpt_conformance.harness.pytest_plugin.rootdir import redo_setup
from gpt_conformance.harness.pytest_plugin.validate import (
    checked_golden_dir,
    checked_gpt2_dir,
    nightly_selected,
    parsed_repro,
    slow_selected,
    writable_dir,
)
from gpt_conformance.harness.report.render import write_session_report
from gpt_conformance.reference.checkpoint import GPT2_DIR_ENV

# The latency tier's options and fixture, the mapping of library exceptions to outcomes, and the
# check that every test's outcome agrees with its records.
pytest_plugins = ["gpt_conformance.harness.pytest_plugin.latency", "gpt_conformance.harness.pytest_plugin.outcomes", "gpt_conformance.harness.pytest_plugin.agreement"]

SESSION_KEY = pytest.StashKey[ConformanceSession]()
ENTRY_POINT_ERRORS = pytest.StashKey[list]()
SLOW_DESELECTED = pytest.StashKey[int]()
NIGHTLY_DESELECTED = pytest.StashKey[int]()
REPORT_KEY = pytest.StashKey[str]()
REPRO_KEY = pytest.StashKey[tuple | None]()
NO_TARGET_APPLIES = pytest.StashKey[set]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt-conformance", "GPT conformance harness")
    group.addoption("--target", action="append", default=[], metavar="NAME",
                    help="run only this target (repeatable); default: every registered target, "
                         "those that cannot run here skip with the reason")
    group.addoption("--update-goldens", action="store_true", default=False,
                    help="regenerate reference/goldens/ for the named cases before checking them")
    group.addoption("--golden-dir", default=None, metavar="DIR",
                    help="read (and with --update-goldens, write) named-case goldens here "
                         "(default: reference/goldens/)")
    group.addoption("--report-dir", default="reports", metavar="DIR",
                    help="where JSON-Lines records are written (default: reports/)")
    group.addoption("--slow", action="store_true", default=False,
                    help="also run tests marked slow (GPT-2-sized shapes, inductor, onnxruntime); "
                         "they are deselected by default unless -m names the slow marker")
    group.addoption("--nightly", action="store_true", default=False,
                    help="also run the GPT-2-sized shapes on every target (implies --slow); without it a --slow "
                         "run keeps one GPT-2-shaped parity case on one target, which proves the path works")
    group.addoption("--list-targets", action="store_true", default=False,
                    help="print the registered targets, whether each can run here and why not, then exit")
    group.addoption("--gpt2-dir", default=None, metavar="PATH",
                    help=f"local Hugging Face GPT-2 directory (config.json + model.safetensors) for the GPT-2 "
                         f"greedy cases, which are slow (needs --slow); default ${GPT2_DIR_ENV}; without it they skip")
    group.addoption("--localize-prepares", type=int, default=Budget.max_prepares, metavar="N",
                    help="a failing named case of a black-box target is located by bisecting truncated models: "
                         f"at most N prepares per failure (default {Budget.max_prepares}; 0: no bisection)")
    group.addoption("--localize-seconds", type=float, default=Budget.max_seconds, metavar="S",
                    help=f"... and at most S seconds per failure (default {Budget.max_seconds:g})")
    group.addoption("--repro", default=None, metavar="JSON",
                    help="replay one property example (the JSON a failing property test prints; write "
                         "--repro=JSON) in the tests marked repro; without it those tests are deselected")
    group.addoption("--repro-file", default=None, metavar="PATH",
                    help="the same as --repro, with the JSON read from the file PATH")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # Before anything reads the configuration: see harness/pytest_plugin/rootdir.py.
    redo_setup(early_config, args)


def pytest_configure(config: pytest.Config) -> None:
    errors = registry.load_entry_points() if not len(registry) else []
    built_in = [str(e) for e in errors if e.built_in]
    if built_in:
        raise pytest.UsageError("gpt-conformance: a built-in target failed to load (a broken install): "
                                + "; ".join(built_in))
    config.stash[ENTRY_POINT_ERRORS] = errors
    config.hook.pytest_gpt_conformance_register(registry=registry)
    unknown = [n for n in config.getoption("target") if n not in registry]
    if unknown:
        raise pytest.UsageError(f"--target {', '.join(unknown)}: unknown target; registered: {registry.names()}")
    report_dir = writable_dir(config.getoption("report_dir"), "records")
    golden_dir = checked_golden_dir(config)
    checked_gpt2_dir(config)
    config.stash[REPRO_KEY] = parsed_repro(config)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_id = os.environ.get("GPT_CONFORMANCE_RUN_ID") or time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    os.environ["GPT_CONFORMANCE_RUN_ID"] = run_id  # xdist workers inherit it, so they share the run id
    writer = RecordWriter(report_dir / f"records-{run_id}-{worker}.jsonl", run_id)
    options = Options(report_dir=report_dir, update_goldens=config.getoption("update_goldens"),
                      selected=config.getoption("target"),
                      localize_budget=Budget(config.getoption("localize_prepares"), config.getoption("localize_seconds")))
    if golden_dir is not None:
        options.golden_dir = golden_dir
    session = ConformanceSession(registry, writer, options)
    config.stash[SESSION_KEY] = session
    if not hasattr(config, "workerinput"):  # once per run, not once per xdist worker
        for error in errors:  # a third-party target that failed to load is an error verdict
            writer.write({"target": error.name, "case": "load", "check": "load", "status": "error",
                          "message": str(error)})


def selected_targets(config: pytest.Config) -> list[Target]:
    names = config.getoption("target") or registry.names()
    return [registry.get(n) for n in names]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    # Only the targets the test applies to, in a tier -m can select (harness/pytest_plugin/collection.py).
    params = [pytest.param(t, id=t.name, marks=[getattr(pytest.mark, m) for m in (t.marker, *t.marks)])
              for t in targets_for(metafunc, selected_targets(metafunc.config))]
    if not params:
        metafunc.config.stash.setdefault(NO_TARGET_APPLIES, set()).add(metafunc.definition.nodeid)
    metafunc.parametrize("target", params)


def pytest_runtest_setup(item: pytest.Item) -> None:
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    if isinstance(target, Target):
        availability = target.probe()
        if not availability:
            pytest.skip(f"{target.name}: {availability.reason}")


@pytest.fixture(scope="session")
def conformance(request: pytest.FixtureRequest) -> ConformanceSession:
    """The run's shared state: prepared targets, goldens and the record writer."""
    return request.config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def gpt2_dir(request: pytest.FixtureRequest) -> Path:
    """The local GPT-2 directory from ``--gpt2-dir`` / ``$GPT_CONFORMANCE_GPT2_DIR``; skips without one."""
    value = request.config.getoption("gpt2_dir") or os.environ.get(GPT2_DIR_ENV)
    if not value:
        pytest.skip(f"GPT-2 cases need a local Hugging Face GPT-2 directory: --gpt2-dir PATH or ${GPT2_DIR_ENV}")
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"--gpt2-dir {value}: not a directory", pytrace=False)
    return path


@pytest.fixture(scope="session")
def repro_example(request: pytest.FixtureRequest) -> tuple:
    """The property example given with ``--repro`` or ``--repro-file``: (target name, model case, input case)."""
    return request.config.stash[REPRO_KEY]


@pytest.fixture(scope="session")
def target_registry():
    return registry


@pytest.fixture(scope="session")
def targets_under_test(request: pytest.FixtureRequest) -> list[Target]:
    """The targets this run checks: those named with ``--target``, else every registered one."""
    return selected_targets(request.config)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash.get(NO_TARGET_APPLIES, None):
        items[:] = without_tests(items, config.stash[NO_TARGET_APPLIES])
    if config.stash[REPRO_KEY] is None:
        replays = [item for item in items if item.get_closest_marker("repro")]
        if replays:
            config.hook.pytest_deselected(items=replays)
            items[:] = [item for item in items if not item.get_closest_marker("repro")]
    if config.getoption("list_targets"):
        lines = ["registered targets:"]
        for target in selected_targets(config):
            availability = target.probe()
            state = "can run here" if availability else f"skips: {availability.reason}"
            lines.append(f"  {target.name:<20} {target.precision:<14} [{target.marker}] {state}")
        for err in config.stash[ENTRY_POINT_ERRORS]:
            lines.append(f"  failed to load {err}")
        print("\n".join(lines))
        items.clear()
        return
    if not nightly_selected(config):
        nightly = [item for item in items if nightly_only(item)]
        if nightly:
            config.hook.pytest_deselected(items=nightly)
            items[:] = [item for item in items if not nightly_only(item)]
            config.stash[NIGHTLY_DESELECTED] = len(nightly)
    if not slow_selected(config):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
            config.stash[SLOW_DESELECTED] = len(slow)


def nightly_only(item: pytest.Item) -> bool:
    """Marked nightly, and not the one target the marker keeps (``nightly(keep_target=NAME)``)."""
    mark = item.get_closest_marker("nightly")
    if mark is None:
        return False
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec else None
    return getattr(target, "name", None) != mark.kwargs.get("keep_target")


def write_phase_seconds(conformance: ConformanceSession) -> None:
    """``timings-<run>-<worker>.json`` beside the records: seconds per target and phase, for
    ``benchmarks/bench_tiers.py``."""
    writer = conformance.writer
    path = writer.path.with_name(writer.path.name.replace("records-", "timings-", 1)).with_suffix(".json")
    rows = [{"target": t, "phase": p, "seconds": s} for (t, p), s in sorted(conformance.phase_seconds.items())]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    tr = terminalreporter
    for err in config.stash[ENTRY_POINT_ERRORS]:
        tr.write_line(f"gpt-conformance: failed to load {err}", red=True)
    if config.stash.get(SLOW_DESELECTED, 0):
        tr.write_line(f"gpt-conformance: {config.stash[SLOW_DESELECTED]} slow tests deselected "
                      "(GPT-2-sized shapes, inductor, onnxruntime); add --slow to run them", yellow=True)
    if config.stash.get(NIGHTLY_DESELECTED, 0) and slow_selected(config):
        tr.write_line(f"gpt-conformance: {config.stash[NIGHTLY_DESELECTED]} GPT-2-sized tests deselected (one "
                      "GPT-2-shaped parity case kept); add --nightly to run them on every target", yellow=True)
    reasons: Counter = Counter()
    for report in tr.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reasons[report.longrepr[2].removeprefix("Skipped: ")] += 1
    if session.writer.count:
        tr.write_sep("-", "gpt-conformance")
        tr.write_line(f"{session.writer.count} records written to {session.writer.path}")
    report = config.stash.get(REPORT_KEY, None)
    if report:
        tr.write_line(f"parity report: {report}", red=report.startswith("failed"))
    if reasons:
        tr.write_line("skip reasons:")
        for reason, count in reasons.most_common():
            tr.write_line(f"  {count:>4} x {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    conformance = session.config.stash.get(SESSION_KEY, None)
    if conformance is not None and conformance.phase_seconds:
        write_phase_seconds(conformance)
    if not hasattr(session.config, "workerinput") and SESSION_KEY in session.config.stash:
        # Only the controller: it sees every xdist worker's record file of this run.
        writer = session.config.stash[SESSION_KEY].writer
        session.config.stash[REPORT_KEY] = write_session_report(writer.path.parent, writer.run_id)
    if session.config.getoption("list_targets") and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
    elif session.config.stash.get(ENTRY_POINT_ERRORS, []) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a target that failed to load is never a green run
