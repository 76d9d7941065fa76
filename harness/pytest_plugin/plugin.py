"""Pytest glue: the pytest plugin: options, target registration and parametrization, hardware gating, records.

Loaded by the ``pytest11`` entry point, wherever pytest starts, so it is inert until asked: in a
run that collects no test marked ``gpt_conformance`` (every module of ``gpt_conformance.cases`` is)
and passes none of its options, it parametrizes, deselects, writes and prints nothing, and sets no
environment variable. Options are checked once at start (``validate``). Every marked test that
takes a ``target`` argument is parametrized over the selected targets and carries the target's
hardware marker (``cpu``, ``gpu``, ``trn1``). Whether a target can run here is probed when the test
is set up, never at collection, and a target that cannot run skips with its probe's exact reason.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.checks.localize import Budget
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.harness.core.targets import Target, registry
from gpt_conformance.harness.pytest_plugin import hookspecs, profiles  # noqa: F401  (profiles registers Hypothesis settings)
from gpt_conformance.harness.pytest_plugin.collection import shared_ids, targets_for, without_tests
from gpt_conformance.harness.pytest_plugin.markers import MARKERS, is_conformance_test
from gpt_conformance.harness.pytest_plugin.path_options import refuse_spaced_path_options
from gpt_conformance.harness.pytest_plugin.validate import (
    checked_golden_dir,
    checked_gpt2_dir,
    nightly_selected,
    parsed_repro,
    slow_selected,
    torch_threads,
    writable_dir,
)
from gpt_conformance.harness.report.render import write_session_report
from gpt_conformance.reference.checkpoint import GPT2_DIR_ENV

# The directory an xdist run's workers share, the lock that runs a latency case alone under
# xdist, the latency tier's options and fixture, the mapping of library exceptions to outcomes,
# the check that every test's outcome agrees with its records, and xdist's loadgroup by target.
# A module comes before those that import it: pytest cannot rewrite the asserts of a plugin
# module imported before its turn, and warns so (PytestAssertRewriteWarning) in every run.
pytest_plugins = ["gpt_conformance.harness.pytest_plugin.rundir", "gpt_conformance.harness.pytest_plugin.quiet",
                  "gpt_conformance.harness.pytest_plugin.latency", "gpt_conformance.harness.pytest_plugin.outcomes",
                  "gpt_conformance.harness.pytest_plugin.agreement", "gpt_conformance.harness.pytest_plugin.parallel"]

SESSION_KEY = pytest.StashKey[ConformanceSession]()
ENTRY_POINT_ERRORS = pytest.StashKey[list]()
SLOW_DESELECTED = pytest.StashKey[int]()
NIGHTLY_DESELECTED = pytest.StashKey[int]()
REPORT_KEY = pytest.StashKey[str]()
REPRO_KEY = pytest.StashKey[tuple | None]()
ACTIVE_KEY = pytest.StashKey[bool]()
# The run id's key in xdist's workerinput: every worker writes records under the controller's id.
RUN_ID_INPUT = "gpt_conformance_run_id"
NO_TARGET_APPLIES = pytest.StashKey[set]()
THREADS_KEY = pytest.StashKey[int | None]()  # --torch-threads resolved; None: torch's own choice
RESTORE_THREADS_KEY = pytest.StashKey[int]()  # torch's thread count before the run changed it


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


# Each option's dest and default: a run that changes none of them and collects no conformance test
# is not a gpt-conformance run (see ``active``).
OPTION_DEFAULTS: dict[str, object] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt-conformance", "GPT conformance harness")

    def addoption(*names: str, **kwargs) -> None:
        group.addoption(*names, **kwargs)
        OPTION_DEFAULTS[names[0].lstrip("-").replace("-", "_")] = kwargs.get("default")

    addoption("--target", action="append", default=[], metavar="NAME",
              help="run only this target (repeatable); default: every registered target, "
                   "those that cannot run here skip with the reason")
    addoption("--update-goldens", action="store_true", default=False,
              help="regenerate reference/goldens/ for the named cases before checking them")
    addoption("--golden-dir", default=None, metavar="DIR",
              help="read (and with --update-goldens, write) named-case goldens here "
                   "(default: reference/goldens/); write --golden-dir=DIR")
    addoption("--report-dir", default="reports", metavar="DIR",
              help="where JSON-Lines records are written (default: reports/); write --report-dir=DIR")
    addoption("--slow", action="store_true", default=False,
              help="also run tests marked slow (GPT-2-sized shapes, inductor, onnxruntime); "
                   "they are deselected by default unless -m names the slow marker")
    addoption("--nightly", action="store_true", default=False,
              help="also run the GPT-2-sized shapes on every target (implies --slow); without it a --slow "
                   "run keeps one GPT-2-shaped parity case on one target, which proves the path works")
    addoption("--list-targets", action="store_true", default=False,
              help="print the registered targets, whether each can run here and why not, then exit")
    addoption("--gpt2-dir", default=None, metavar="PATH",
              help=f"local Hugging Face GPT-2 directory (config.json + model.safetensors; write --gpt2-dir=PATH) "
                   f"for the GPT-2 greedy cases, which are slow (needs --slow); default ${GPT2_DIR_ENV}; without it they skip")
    addoption("--localize-prepares", type=int, default=Budget.max_prepares, metavar="N",
              help="a failing named case of a black-box target is located by bisecting truncated models: "
                   f"at most N prepares per failure (default {Budget.max_prepares}; 0: no bisection)")
    addoption("--localize-seconds", type=float, default=Budget.max_seconds, metavar="S",
              help=f"... and at most S seconds per failure (default {Budget.max_seconds:g})")
    addoption("--repro", default=None, metavar="JSON",
              help="replay one property example (the JSON a failing property test prints; write "
                   "--repro=JSON) in the tests marked repro; without it those tests are deselected")
    addoption("--repro-file", default=None, metavar="PATH",
              help="the same as --repro, with the JSON read from the file PATH (write --repro-file=PATH)")
    addoption("--torch-threads", default="auto", metavar="N",
              help="torch's intra-op CPU threads while conformance tests run; default auto: one per "
                   "pytest-xdist worker (-n), torch's own choice otherwise. On a busy machine, 1 is much "
                   "faster for the tier's tiny models (docs/options.md)")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str]) -> None:
    # The first hook that sees the command line with the plugin loaded: see path_options.py.
    refuse_spaced_path_options(args)


def options_given(config: pytest.Config) -> bool:
    return any(config.getoption(dest) != default for dest, default in OPTION_DEFAULTS.items())


def active(config: pytest.Config) -> bool:
    """Whether this is a gpt-conformance run: one of its options given, or a conformance test
    collected here, or (on an xdist controller, which collects nothing) a record of this run written."""
    if config.stash.get(ACTIVE_KEY, False):
        return True
    session = config.stash.get(SESSION_KEY, None)
    return session is not None and any(session.options.report_dir.glob(f"records-{session.writer.run_id}-*.jsonl"))


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
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
    report_dir = Path(config.getoption("report_dir"))
    config.stash[ACTIVE_KEY] = options_given(config)
    if config.stash[ACTIVE_KEY]:
        writable_dir(report_dir, "records", create=False)
    golden_dir = checked_golden_dir(config)
    checked_gpt2_dir(config)
    config.stash[REPRO_KEY] = parsed_repro(config)
    config.stash[THREADS_KEY] = torch_threads(config)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    run_id = (getattr(config, "workerinput", {}).get(RUN_ID_INPUT) or os.environ.get("GPT_CONFORMANCE_RUN_ID")
              or time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
    writer = RecordWriter(report_dir / f"records-{run_id}-{worker}.jsonl", run_id)
    options = Options(report_dir=report_dir, update_goldens=config.getoption("update_goldens"),
                      selected=config.getoption("target"),
                      localize_budget=Budget(config.getoption("localize_prepares"), config.getoption("localize_seconds")))
    if golden_dir is not None:
        options.golden_dir = golden_dir
    session = ConformanceSession(registry, writer, options)
    config.stash[SESSION_KEY] = session


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: each worker gets the controller's run id, so all of them write one run's records."""
    node.workerinput[RUN_ID_INPUT] = node.config.stash[SESSION_KEY].writer.run_id


def selected_targets(config: pytest.Config) -> list[Target]:
    names = config.getoption("target") or registry.names()
    return [registry.get(n) for n in names]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames or not is_conformance_test(metafunc.definition):
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
        pytest.skip(f"GPT-2 cases need a local Hugging Face GPT-2 directory: --gpt2-dir=PATH or ${GPT2_DIR_ENV}")
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


def deselect(config: pytest.Config, items: list[pytest.Item], marker: str, among=is_conformance_test) -> int:
    """Deselect the tests marked ``marker`` ``among`` the items (the conformance tests, never another
    suite's); how many."""
    chosen = [item for item in items if item.get_closest_marker(marker) and among(item)]
    if chosen:
        config.hook.pytest_deselected(items=chosen)
        items[:] = [item for item in items if item not in chosen]
    return len(chosen)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.stash[ACTIVE_KEY] and any(is_conformance_test(item) for item in items):
        writable_dir(Path(config.getoption("report_dir")), "records", create=False)  # before any test computes
        config.stash[ACTIVE_KEY] = True
    if config.stash[ACTIVE_KEY]:
        use_torch_threads(config)
    if config.stash.get(NO_TARGET_APPLIES, None):
        items[:] = without_tests(items, config.stash[NO_TARGET_APPLIES])
    shared = shared_ids(items)
    if shared:
        nodeid, names = next(iter(shared.items()))
        raise pytest.UsageError(f"gpt-conformance: {len(shared)} test id(s) name two tests, e.g. {nodeid} "
                                f"(targets {' and '.join(names)}): their names and case ids join into one id; rename one of "
                                "the targets")
    if config.stash[REPRO_KEY] is None:
        deselect(config, items, "repro")
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
        config.stash[SLOW_DESELECTED] = config.stash.get(SLOW_DESELECTED, 0) + deselect(config, items, "slow")


def use_torch_threads(config: pytest.Config) -> None:
    """Set torch's intra-op threads for the run (``--torch-threads``), once; put back at the end.
    Measured on a 2-core machine: on the shipped Zen model (2 layers, 64 wide, 20 tokens) under load
    9, a forward pass took 0.76 ms with one thread and 160 ms with two, which wait on each other;
    a warm quiet ``pytest -m cpu`` took 142 s with torch's two threads and 167 s with one. So one
    thread is the default only where processes already share the cores: xdist workers."""
    threads = config.stash[THREADS_KEY]
    if threads is not None and RESTORE_THREADS_KEY not in config.stash:
        config.stash[RESTORE_THREADS_KEY] = torch.get_num_threads()
        torch.set_num_threads(threads)


def pytest_unconfigure(config: pytest.Config) -> None:
    if RESTORE_THREADS_KEY in config.stash:
        torch.set_num_threads(config.stash[RESTORE_THREADS_KEY])


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
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"target": t, "phase": p, "seconds": s} for (t, p), s in sorted(conformance.phase_seconds.items())]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not active(config):
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
    config = session.config
    conformance = config.stash.get(SESSION_KEY, None)
    if conformance is None or not active(config):
        return
    if conformance.phase_seconds:
        write_phase_seconds(conformance)
    if not hasattr(config, "workerinput"):
        # Only the controller: it sees every xdist worker's record file of this run.
        for error in config.stash[ENTRY_POINT_ERRORS]:  # a third-party target that failed to load
            conformance.writer.write({"target": error.name, "case": "load", "check": "load", "status": "error",
                                      "message": str(error)})
        config.stash[REPORT_KEY] = write_session_report(conformance.writer.path.parent, conformance.writer.run_id)
    if config.getoption("list_targets") and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK
    elif config.stash[ENTRY_POINT_ERRORS] and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a target that failed to load is never a green run
