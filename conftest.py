"""This checkout's own test run (``pytest`` here: ``cases/`` and ``tests/``), beside what every run
of the suite gets from the plugin (registered once, by its pytest11 entry point, not here).

- The checkout's tests run under the ``conformance-dev`` Hypothesis profile unless ``--hypothesis-profile``
  names another. The plugin loads no profile (another suite's settings are its own); the installed
  suite's property tests need none, since they read theirs from ``property_settings``.
- The harness's own tests (``tests/``) marked slow run only with ``--slow`` or ``-m slow``, as the
  conformance tests do (the plugin deselects only those: another suite's slow marker is its own).
"""

import pytest
from gpt_conformance.harness.pytest_plugin.plugin import SLOW_DESELECTED, deselect
from gpt_conformance.harness.pytest_plugin.profiles import chosen_profile
from gpt_conformance.harness.pytest_plugin.validate import slow_selected
from hypothesis import settings


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile(chosen_profile())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not slow_selected(config):
        config.stash[SLOW_DESELECTED] = config.stash.get(SLOW_DESELECTED, 0) + deselect(
            config, items, "slow", among=lambda item: True)
