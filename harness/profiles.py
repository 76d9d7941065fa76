"""Hypothesis settings profiles, chosen with ``--hypothesis-profile``.

- ``dev`` (default): few examples, so ``pytest -m cpu`` stays fast on a 2-core laptop.
- ``ci``: derandomized (the same examples every run), no database writes.
- ``nightly``: many more examples.

Deadlines are off everywhere: a target's first call compiles or exports.
"""

from hypothesis import HealthCheck, settings

COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile("dev", max_examples=10, **COMMON)
settings.register_profile("ci", max_examples=25, derandomize=True, database=None, print_blob=True, **COMMON)
settings.register_profile("nightly", max_examples=300, print_blob=True, **COMMON)
settings.load_profile("dev")
