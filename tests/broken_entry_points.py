"""A ``-p`` plugin that adds one failing ``gpt_conformance.targets`` entry point to the registry's
load, as a built-in (``BROKEN_ENTRY_POINT=built-in``) or a third-party one (``third-party``)."""

import os

from gpt_conformance.harness.core.targets import OWN_DISTRIBUTION, EntryPointError, registry

_load = registry.load_entry_points


def load_with_a_broken_one() -> list[EntryPointError]:
    distribution = OWN_DISTRIBUTION if os.environ["BROKEN_ENTRY_POINT"] == "built-in" else "someones-backend"
    return [*_load(), EntryPointError("planted-broken", "planted_pkg.targets:TARGETS", distribution,
                                      "ImportError: planted import failure")]


registry.load_entry_points = load_with_a_broken_one
