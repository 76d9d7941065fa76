"""Pytest glue: Hypothesis settings profiles, chosen with ``--hypothesis-profile``.

The names carry the ``conformance-`` prefix because Hypothesis's settings profiles are global to the
process: a plain ``ci`` replaced Hypothesis's own ``ci`` profile, which Hypothesis loads by itself on
a CI machine, so another suite in the venv ran under this harness's settings there.

- ``conformance-dev`` (the conformance tests' default): few examples, so ``pytest -m cpu`` stays fast on a 2-core laptop, and
  derandomized with no database: the same command on the same code draws the same examples and
  gives the same verdicts. (A random dev profile made the main job red on 4 of 7 fresh clones,
  and its database replayed and re-shrank one false alarm on every later run.)
- ``conformance-ci``: derandomized too, more examples.
- ``conformance-nightly``: exploration: random draws, many more examples, and the database under
  ``.hypothesis/``, so a failure it finds is replayed on the next nightly run until fixed; pin it
  for every run with an ``@example`` in ``cases/test_properties.py``.

Deadlines are off everywhere: a target's first call compiles or exports.

Registering a profile loads none: the plugin loads with every pytest run in the venv, and another
suite's Hypothesis settings stay its own. The conformance tests take theirs from
``property_settings``, which reads ``conformance-dev`` where none of these was chosen.
"""

from hypothesis import HealthCheck, settings

DEV, CI, NIGHTLY = "conformance-dev", "conformance-ci", "conformance-nightly"
COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

settings.register_profile(DEV, max_examples=10, derandomize=True, database=None, **COMMON)
settings.register_profile(CI, max_examples=25, derandomize=True, database=None, print_blob=True, **COMMON)
settings.register_profile(NIGHTLY, max_examples=300, print_blob=True, **COMMON)

# Property tests (cases/test_properties.py) build and prepare a new model in every example (an
# export, a compile: seconds on a backend) and check several inputs on it, so they run fewer
# examples than cheap tests. dev: 2 models per target (Hypothesis's first is the minimal model, the
# second random), measured 6-18 s per export target on a loaded 2-core machine.
PROPERTY_EXAMPLES = {DEV: 2, CI: 8, NIGHTLY: 100}
HYPOTHESIS_OWN = ("default", "ci")


def chosen_profile() -> str:
    """The profile loaded now (``--hypothesis-profile``), or ``conformance-dev`` where the loaded one
    is one of Hypothesis's own: ``default``, or ``ci``, which Hypothesis loads by itself on a CI
    machine and which runs 100 examples of every property (a user's own profile is honoured)."""
    current = getattr(settings, "get_current_profile_name", None)
    name = current() if current else getattr(settings, "_current_profile", None)  # older Hypothesis
    return name if name and name not in HYPOTHESIS_OWN else DEV


def property_settings(profile: str | None = None) -> settings:
    """The settings of property tests under ``profile`` (default: ``chosen_profile()``)."""
    name = profile or chosen_profile()
    base = settings.get_profile(name)
    # Drawn models a target cannot prepare are rejected (see properties.check_drawn); a target
    # that accepts few of them must not fail a health check for it.
    checks = [*base.suppress_health_check, HealthCheck.filter_too_much]
    return settings(base, max_examples=PROPERTY_EXAMPLES.get(name, base.max_examples), suppress_health_check=checks)
