"""Property-based conformance: Hypothesis draws models and inputs; every property is checked
on every target (parity with the fp64 oracle, causality, batch independence, prefix
consistency, loss consistency; see ``harness/checks/properties.py`` for what each bound means).

- ``test_properties`` searches: each example is one model (prepared once) and up to three
  inputs. A failure is shrunk to a small example and printed with a one-line repro command.
- ``test_named_properties`` pins every named case of ``reference/cases.py`` (except slow) as an
  ``@example``, so it is always tried. They live in their own test because Hypothesis stops at a
  failing explicit example without shrinking it: a bug they catch would hide the shrunk one.
- ``test_found_example`` replays each input that a search found and ``found_examples.json`` keeps
  (a bug, or a false alarm that moved a bound), on every target, one test each.
- ``test_property_repro`` replays one printed example alone (``--repro=<json>`` or ``--repro-file PATH``).
"""

import json
from pathlib import Path

import pytest
from gpt_conformance.harness.checks.properties import ExampleChecker, PinnedDraws, check_drawn
from gpt_conformance.harness.checks.strategies import InputCase, ModelCase, named_example
from gpt_conformance.harness.pytest_plugin.profiles import property_settings
from gpt_conformance.harness.pytest_plugin.replay import replay_of
from gpt_conformance.reference.cases import NAMED_CASES
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable


def test_properties(target, conformance, pytestconfig):
    @property_settings()
    @given(data=st.data())
    def search(data):
        check_drawn(conformance, target, data, replay_of(pytestconfig, __file__))

    try:
        search()
    except Unsatisfiable:
        pytest.skip(f"{target.name}: it could prepare none of the drawn models (see the skip records for why)")


def pin_named_cases(test):
    for spec in NAMED_CASES:
        if not spec.slow and spec.checkpoint is None:  # a trained checkpoint is no drawable model
            test = example(data=PinnedDraws(*named_example(spec), name=spec.name))(test)
    return test


@settings(phases=[Phase.explicit])
@pin_named_cases
@given(data=st.data())
def test_named_properties(target, conformance, pytestconfig, data):
    check_drawn(conformance, target, data, replay_of(pytestconfig, __file__))


# Each with where and what it found; replayed in every run, since a Hypothesis database does not
# travel. A target that cannot prepare the example's model skips it with the reason.
FOUND_EXAMPLES = json.loads((Path(__file__).parent / "found_examples.json").read_text())


@pytest.mark.parametrize("found", FOUND_EXAMPLES, ids=[found["name"] for found in FOUND_EXAMPLES])
def test_found_example(target, conformance, pytestconfig, found):
    model_case, inp = ModelCase.from_dict(found["model"]), InputCase.from_dict(found["input"])
    ExampleChecker(conformance, target, model_case, replay_of(pytestconfig, __file__)).check(inp)


@pytest.mark.repro
def test_property_repro(target, conformance, pytestconfig, repro_example):
    name, model_case, inp = repro_example
    if name != target.name:
        pytest.skip(f"the --repro example is for target {name!r}")
    ExampleChecker(conformance, target, model_case, replay_of(pytestconfig, __file__)).check(inp)
