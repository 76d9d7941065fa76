"""Pytest glue: what a printed repro command needs to replay as printed, from the directory of the
failing run (``gpt_conformance.harness.checks.properties.Replay``).

The run's ``-p`` plugins are named again, and each one's import root goes on ``PYTHONPATH``
unless the replay finds it anyway (an installed package, or a directory the project's pytest
configuration puts on ``sys.path``): a plugin module outside the repository was importable in
the failing run only through that run's environment. The test file is named as seen from the
run's directory.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

import pytest
from gpt_conformance.harness.checks.properties import Replay, invocation_plugins


def import_root(module_name: str) -> Path | None:
    """The ``sys.path`` directory ``module_name`` was imported from; None if it has no file."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return None
    depth = len(module_name.split(".")) - (0 if Path(path).stem == "__init__" else 1)
    return Path(path).resolve().parents[depth]


def found_anyway(config: pytest.Config) -> set[Path]:
    """Directories a replay imports from without help: site-packages and the ini's ``pythonpath``."""
    dirs = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_paths()["purelib"],
            *config.getini("pythonpath")]
    return {Path(d).resolve() for d in dirs}


def replay_of(config: pytest.Config, test_file: str | Path) -> Replay:
    plugins = invocation_plugins(config.invocation_params.args)
    known = found_anyway(config)
    roots = [import_root(name) for name in plugins]
    pythonpath = tuple(dict.fromkeys(str(root) for root in roots if root is not None and root not in known))
    here = config.invocation_params.dir
    relative = os.path.relpath(Path(test_file).resolve(), here)
    shown = relative if not relative.startswith("..") else str(Path(test_file).resolve())
    return Replay(test_file=shown, plugins=plugins, pythonpath=pythonpath)
