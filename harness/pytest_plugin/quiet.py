"""Pytest glue: under pytest-xdist, a latency case runs alone.

A time taken while another worker computes on the same cores measures the contention as much as
the target, which is why pytest-benchmark turns itself off under xdist. The latency cases run
there all the same, because no other test runs while one of them does: every test of a worker
holds a shared lock from its setup to its teardown, and a latency case (marker ``latency``) holds
it exclusively. It starts when the tests running on the other workers have ended, and they start
their next test when it has. Its rounds are then timed by the harness
(``gpt_conformance.harness.checks.latency``), with the protocol of pytest-benchmark's
``pedantic``.

The lock is ``fcntl.flock`` on a file in a directory the xdist controller makes for the run and
removes at its end. A latency case first takes a turnstile that each test passes through before its
shared lock, so a case waiting for the lock is not overtaken by the next tests of the other
workers. Only a run that collected conformance tests takes locks: another suite in the venv runs
under xdist as it always did. Where ``fcntl`` is missing (Windows) the latency cases skip under
xdist, saying so. A serial run takes no lock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from gpt_conformance.harness.pytest_plugin.markers import is_conformance_test
from gpt_conformance.harness.pytest_plugin.plugin import active

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

DIR_INPUT = "gpt_conformance_quiet_dir"  # xdist workerinput: the run's lock directory
DIR_KEY = pytest.StashKey[Path]()
UNUSED_FIXTURE_WARNING = "Benchmark fixture was not used at all in this test"


def available() -> bool:
    """Whether this process is an xdist worker whose latency cases can run alone."""
    return fcntl is not None and bool(os.environ.get("PYTEST_XDIST_WORKER"))


@contextmanager
def held(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def running(directory: Path, alone: bool) -> Iterator[None]:
    """Hold the run's lock while a test runs: exclusively when ``alone``, else shared."""
    lock, turnstile = directory / "lock", directory / "turnstile"
    if alone:
        with held(turnstile, fcntl.LOCK_EX), held(lock, fcntl.LOCK_EX):
            yield
        return
    with held(turnstile, fcntl.LOCK_EX):
        pass  # not past a latency case that waits for the lock
    with held(lock, fcntl.LOCK_SH):
        yield


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: one lock directory for the run, handed to every worker."""
    config = node.config
    if DIR_KEY not in config.stash:
        config.stash[DIR_KEY] = Path(tempfile.mkdtemp(prefix="gpt-conformance-quiet-"))
    node.workerinput[DIR_INPUT] = str(config.stash[DIR_KEY])


def pytest_configure(config: pytest.Config) -> None:
    directory = getattr(config, "workerinput", {}).get(DIR_INPUT)
    if directory and available():
        config.stash[DIR_KEY] = Path(directory)
        # pytest-benchmark's fixture is requested but not used: the harness times these rounds.
        config.addinivalue_line("filterwarnings", f"ignore:{UNUSED_FIXTURE_WARNING}")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Every worker collects every test, so all of them decide alike (the controller collects none).
    config = session.config
    if hasattr(config, "workerinput") and DIR_KEY in config.stash and not any(is_conformance_test(item) for item in session.items):
        del config.stash[DIR_KEY]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    directory = item.config.stash.get(DIR_KEY, None)  # a worker's: the controller runs no test
    if directory is None:
        return (yield)
    with running(directory, alone=item.get_closest_marker("latency") is not None):
        return (yield)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and DIR_KEY in config.stash and active(config):
        terminalreporter.write_line("gpt-conformance: under xdist each latency case ran alone, timed by the harness "
                                    "(pytest-benchmark's notice that benchmarks are disabled under xdist is about "
                                    "its own timer)")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and DIR_KEY in config.stash:
        shutil.rmtree(config.stash[DIR_KEY], ignore_errors=True)
