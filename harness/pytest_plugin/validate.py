"""Pytest glue: the plugin's options checked once, at start, before a test is collected or computed.

Each check returns the option's usable value or raises ``pytest.UsageError`` with one line that
names the option and what is wrong (pytest prints it and exits 4, without a traceback).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from gpt_conformance.harness.checks.properties import load_example


def writable_dir(value: str | Path, what: str, create: bool = True) -> Path:
    """A directory (``--report-dir``; ``--golden-dir`` with ``--update-goldens``) proven writable by
    writing a file there, or where it would be created: a run that computes for minutes and then
    cannot write its ``what`` has wasted them. ``create``: create it now; else the records create
    it with the first one, and a run that writes none leaves no directory behind."""
    path = Path(value)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        with tempfile.TemporaryFile(dir=existing, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise pytest.UsageError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    return path


def parsed_repro(config: pytest.Config):
    """The property example of ``--repro=JSON`` or ``--repro-file PATH`` as ``load_example``
    returns it (target name, model case, input case), or None when neither is given."""
    text, path = config.getoption("repro"), config.getoption("repro_file")
    if text is not None and path is not None:
        raise pytest.UsageError("--repro and --repro-file: give one property example, not both")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise pytest.UsageError(f"--repro-file {path}: {exc.strerror or exc}") from None
    elif text is not None and text.startswith("@"):
        raise pytest.UsageError(f"--repro={text}: --repro takes the JSON itself; for a file use --repro-file="
                                f"{text[1:] or 'PATH'}")
    if text is None:
        return None
    try:
        return load_example(text)
    except ValueError as exc:  # load_example's message starts "--repro: "
        message = str(exc) if path is None else f"--repro-file {path}: {str(exc).removeprefix('--repro: ')}"
        raise pytest.UsageError(message) from None


def slow_selected(config: pytest.Config) -> bool:
    """Whether the tests marked slow run: ``--slow`` (or ``--nightly``), or a ``-m`` expression naming the marker."""
    return config.getoption("slow") or nightly_selected(config) or "slow" in (config.getoption("markexpr") or "")


def nightly_selected(config: pytest.Config) -> bool:
    """Whether the GPT-2-sized shapes run on every target: ``--nightly``, or a ``-m`` naming the marker."""
    return config.getoption("nightly") or "nightly" in (config.getoption("markexpr") or "")


def checked_gpt2_dir(config: pytest.Config) -> None:
    """``--gpt2-dir`` given on the command line must be a directory, and is for the GPT-2 greedy
    cases, which are slow: without them selected it would be silently ignored. (The environment
    variable is a standing default, so it is not an error for runs that leave the slow tests out.)"""
    value = config.getoption("gpt2_dir")
    if value is None:
        return
    if not os.path.isdir(value):
        raise pytest.UsageError(f"--gpt2-dir {value}: not a directory (expected a Hugging Face GPT-2 directory "
                                "with config.json and model.safetensors)")
    if not slow_selected(config):
        raise pytest.UsageError(f"--gpt2-dir {value}: the GPT-2 greedy cases are slow (GPT-2-sized, minutes on a "
                                "CPU) and are deselected without --slow; run them with --slow, e.g. pytest "
                                "cases/test_greedy.py -k gpt2 --slow --gpt2-dir=PATH")


def checked_golden_dir(config: pytest.Config) -> Path | None:
    """``--golden-dir``: a directory to read goldens from; with ``--update-goldens`` it may be new."""
    value = config.getoption("golden_dir")
    if value is None:
        return None
    path = Path(value)
    if config.getoption("update_goldens"):
        return writable_dir(path, "goldens")
    if not path.is_dir():
        raise pytest.UsageError(f"--golden-dir {value}: not a directory (add --update-goldens to create goldens there)")
    return path


def torch_threads(config: pytest.Config) -> int | None:
    """``--torch-threads``: a positive count; ``auto``: one in a pytest-xdist worker (``-n N`` runs N
    processes, each on a core of its own), else None (torch's own choice)."""
    value = str(config.getoption("torch_threads")).strip().lower()
    if value == "auto":
        return 1 if os.environ.get("PYTEST_XDIST_WORKER") else None
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"--torch-threads {value!r}: expected a positive number of threads or 'auto'")
    return int(value)
