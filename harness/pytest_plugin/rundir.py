"""Pytest glue: a directory that the xdist controller makes for one run and hands to its workers.

The workers of a run share through it what xdist does not carry for them: the lock that runs a
latency case alone (``quiet.py``) and the ``xdist_group`` marks of the tests they collected, which
the scheduler reads (``parallel.py``). The controller makes it when it starts the first worker
and removes it at the end of the run; a serial run has none.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

INPUT = "gpt_conformance_run_dir"  # xdist workerinput: the run's directory
KEY = pytest.StashKey[Path]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: one directory for the run, handed to every worker."""
    config = node.config
    if KEY not in config.stash:
        config.stash[KEY] = Path(tempfile.mkdtemp(prefix="gpt-conformance-run-"))
    node.workerinput[INPUT] = str(config.stash[KEY])


def shared_directory(config: pytest.Config) -> Path | None:
    """The run's directory, on the controller once it started a worker and on each worker; None in
    a serial run."""
    if KEY in config.stash:
        return config.stash[KEY]
    value = getattr(config, "workerinput", {}).get(INPUT)
    return Path(value) if value else None


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and KEY in config.stash:
        shutil.rmtree(config.stash[KEY], ignore_errors=True)
