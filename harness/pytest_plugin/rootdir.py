"""Pytest glue: rootdir and config file chosen as if pytest had known the plugin's options from the start.

pytest picks its rootdir and reads its config file before it loads entry-point plugins, so it
does not yet know ``--report-dir``, ``--golden-dir``, ``--gpt2-dir`` or ``--repro-file``, and an
existing directory given as their value (``pytest -m cpu --report-dir /tmp/x``) is taken for a
test path. rootdir then becomes ``/tmp/x`` and ``pyproject.toml`` is never read: no markers, no
testpaths, no addopts, no pythonpath. pytest documents this (docs.pytest.org, "Configuration",
"Initialization: determining rootdir and configfile": a plugin option holding a path needs an
explicit test path; pytest-dev/pytest issue #1435). The ``--opt=VALUE`` form never had the
problem; ``--opt VALUE`` is how users type it.

Once the options are known, ``redo_setup`` makes pytest's choice again without their values and,
where the answer differs, puts it in place. That needs pytest's internals (checked with pytest
9.2); where they differ, it stops with a usage error that says how to write the command instead,
rather than run with the wrong configuration.
"""

from __future__ import annotations

import copy

import pytest

# The plugin's options whose value is a path.
PATH_OPTIONS = ("report_dir", "golden_dir", "gpt2_dir", "repro_file")


def redo_setup(config: pytest.Config, args: list[str]) -> None:
    """Where pytest took a path option's value for a test path, determine rootdir and config file
    again from the test paths alone. ``args`` is the command line pytest parses next; it gets the
    config file's ``addopts``."""
    ns = config.known_args_namespace
    values = {getattr(ns, name, None) for name in PATH_OPTIONS}
    if not any(arg in values for arg in args):  # only the --opt VALUE form gives pytest a stray path
        return
    try:
        from _pytest.config.findpaths import determine_setup

        rootpath, inipath, inicfg, ignored = determine_setup(
            inifile=ns.inifilename, override_ini=ns.override_ini, args=ns.file_or_dir,
            rootdir_cmd_arg=ns.rootdir or None, invocation_dir=config.invocation_params.dir)
        if (rootpath, inipath) == (config.rootpath, config.inipath):
            return
        config._rootpath, config._inipath, config._inicfg = rootpath, inipath, inicfg
        config._ignored_config_files = ignored
        config._inicache.clear()
        config._parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
        args[:] = [*config.getini("addopts"), *args]
        config.known_args_namespace = config._parser.parse_known_args(args, namespace=copy.copy(config.option))
        if config.known_args_namespace.confcutdir is None:
            config.known_args_namespace.confcutdir = str(inipath.parent if inipath else rootpath)
        config._configure_python_path()
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise pytest.UsageError(
            f"pytest took an option's value for a test path and chose rootdir {config.rootpath}; this pytest's "
            f"internals differ from what gpt-conformance can correct ({type(exc).__name__}: {exc}): write the "
            "option as --option=VALUE, or name the tests to run") from None
