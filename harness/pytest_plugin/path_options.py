"""Pytest glue: the plugin's path options are written ``--opt=VALUE``; ``--opt VALUE`` is refused.

pytest chooses its rootdir and reads its config file before it loads entry-point plugins, so it
does not yet know ``--report-dir``, ``--golden-dir``, ``--gpt2-dir`` or ``--repro-file``, and takes
an existing path given as their value after a space for a test path: ``pytest -m cpu --report-dir
/tmp/x`` roots the run in ``/tmp/x`` and never reads ``pyproject.toml`` (no markers, testpaths,
addopts). pytest documents this (docs.pytest.org, "Configuration", "Initialization: determining
rootdir and configfile"; pytest-dev/pytest issue #1435). With ``=`` the value is never a test path.

Whether the chosen rootdir was affected cannot be told without pytest's internals, so the spaced
form of a path option is refused, always (a command that worked once works again when the
directory exists): a one-line usage error, before anything is collected, that says what to write.
"""

from __future__ import annotations

import pytest

PATH_OPTIONS = ("--report-dir", "--golden-dir", "--gpt2-dir", "--repro-file")


def refuse_spaced_path_options(args: list[str]) -> None:
    """Raise a usage error for the first path option in ``args`` given as ``--opt VALUE``."""
    for option, value in zip(args, args[1:], strict=False):  # the last argument has no value after it
        if option == "--":
            return
        if option in PATH_OPTIONS:
            raise pytest.UsageError(f"{option} {value}: write {option}={value} (pytest takes a path given after "
                                    "a space for a test path, and would root the run there)")
