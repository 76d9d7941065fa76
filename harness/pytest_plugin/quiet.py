"""Pytest glue: under pytest-xdist, a latency case runs alone.

A time taken while another worker computes on the same cores measures the contention as much as
the target, which is why pytest-benchmark turns itself off under xdist. The latency cases run
there all the same, because no other test runs while one of them does: every test of a worker
holds a shared lock from its setup to its teardown, and a latency case (marker ``latency``) holds
it exclusively. It starts when the tests running on the other workers have ended, and they start
their next test when it has. Its rounds are then timed by the harness
(``gpt_conformance.harness.checks.latency``), with the protocol of pytest-benchmark's
``pedantic``.

The lock is ``fcntl.flock`` on a file in the directory the xdist controller makes for the run
(``rundir.py``). A latency case first takes a turnstile that each test passes through before its
shared lock, so a case waiting for the lock is not overtaken by the next tests of the other
workers. The latency cases are one xdist group (``cases/test_latency.py``), so under ``--dist
loadgroup`` they run one after another on one worker (``parallel.py``), which keeps the lock from one to the next:
the other workers' tests are waited for once, not before each case. Only a run that collected conformance tests takes locks: another suite in the venv runs
under xdist as it always did. Where ``fcntl`` is missing (Windows) the latency cases skip under
xdist, saying so. A serial run takes no lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gpt_conformance.harness.pytest_plugin import rundir
from gpt_conformance.harness.pytest_plugin.markers import is_conformance_test
from gpt_conformance.harness.pytest_plugin.plugin import active

try:
    import fcntl
except ImportError:  # Windows: no flock, so no latency case can run alone under xdist
    HAS_FCNTL = False
else:
    HAS_FCNTL = True

LOCK_KEY = pytest.StashKey["RunLock"]()  # on a worker whose tests take the run's lock
UNUSED_FIXTURE_WARNING = "Benchmark fixture was not used at all in this test"


def available() -> bool:
    """Whether this process is an xdist worker whose latency cases can run alone."""
    return HAS_FCNTL and bool(os.environ.get("PYTEST_XDIST_WORKER"))


class RunLock:
    """The run's lock as one worker holds it: shared, or alone (exclusive, with the turnstile)."""

    def __init__(self, directory: Path):
        self.lock, self.turnstile = directory / "lock", directory / "turnstile"
        self.handles: list = []  # open files whose flocks are held
        self.alone: bool | None = None

    def acquire(self, alone: bool) -> None:
        if self.alone == alone:
            return
        self.release()
        if alone:
            self.handles.append(flocked(self.turnstile, fcntl.LOCK_EX))
            self.handles.append(flocked(self.lock, fcntl.LOCK_EX))
        else:
            flocked(self.turnstile, fcntl.LOCK_EX).close()  # not past a latency case that waits for the lock
            self.handles.append(flocked(self.lock, fcntl.LOCK_SH))
        self.alone = alone

    def release(self) -> None:
        for handle in reversed(self.handles):
            handle.close()  # closing the file drops its flock
        self.handles, self.alone = [], None


def flocked(path: Path, mode: int):
    handle = open(path, "a+b")  # noqa: SIM115  (held open across tests: RunLock closes it)
    fcntl.flock(handle, mode)
    return handle


def is_latency(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("latency") is not None


def pytest_configure(config: pytest.Config) -> None:
    directory = rundir.shared_directory(config) if hasattr(config, "workerinput") else None
    if directory and available():
        config.stash[LOCK_KEY] = RunLock(directory)
        # pytest-benchmark's fixture is requested but not used: the harness times these rounds.
        config.addinivalue_line("filterwarnings", f"ignore:{UNUSED_FIXTURE_WARNING}")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Every worker collects every test, so all of them decide alike (the controller collects none).
    config = session.config
    if hasattr(config, "workerinput") and LOCK_KEY in config.stash and not any(is_conformance_test(item) for item in session.items):
        del config.stash[LOCK_KEY]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    if LOCK_KEY not in item.config.stash:  # a serial run, the controller, or another suite's run
        return (yield)
    lock = item.config.stash[LOCK_KEY]
    lock.acquire(alone=is_latency(item))
    try:
        return (yield)
    finally:
        # Consecutive latency cases (cases/test_latency.py is one xdist group) keep the lock: the
        # other workers' tests are waited for once, not before each case.
        if not (is_latency(item) and is_latency(nextitem)):
            lock.release()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and rundir.shared_directory(config) and active(config):
        terminalreporter.write_line("gpt-conformance: under xdist each latency case ran alone, timed by the harness "
                                    "(pytest-benchmark's notice that benchmarks are disabled under xdist is about "
                                    "its own timer)")
