"""Pytest glue: hooks that pytest plugins implement to extend gpt-conformance."""

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_gpt_conformance_register(registry):
    """Register targets (``registry.register(target)``) or policies (``gpt_conformance.harness.api.register_policy``).

    Called once per session after the ``gpt_conformance.targets`` entry points are loaded.
    """
