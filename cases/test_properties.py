"""Property-based conformance: Hypothesis draws models and inputs; every property is checked
on every target (parity with the fp64 oracle, causality, batch independence, prefix
consistency, loss consistency; see ``harness/checks/properties.py`` for what each bound means).

Each test runs once per model family (``nanogpt``, ``nanochat``); a target is never handed a model of
a family it does not declare (that test skips, on the record, with the reason).

- ``test_properties`` searches: each example is one model (prepared once) and up to three
  inputs. A failure is shrunk to a small example and printed with a one-line repro command.
- ``test_named_properties`` pins every named case of ``reference/cases.py`` of its family (except
  slow) as an ``@example``, so it is always tried. They live in their own test because Hypothesis stops at a
  failing explicit example without shrinking it: a bug they catch would hide the shrunk one.
- ``test_found_example`` replays each input that a search found and ``found_examples.json`` keeps
  (a bug, or a false alarm that moved a bound), on every target, one test each.
- ``test_property_repro`` replays one printed example alone (``--repro=<json>`` or ``--repro-file PATH``).
"""

import json
from pathlib import Path

import pytest
from gpt_conformance.harness.checks.properties import CASE_ID, ExampleChecker, PinnedDraws, check_drawn
from gpt_conformance.harness.checks.strategies import InputCase, ModelCase, named_example
from gpt_conformance.harness.pytest_plugin.profiles import property_settings
from gpt_conformance.harness.pytest_plugin.replay import replay_of
from gpt_conformance.reference.cases import ALL_CASES
from gpt_conformance.reference.families import FAMILIES
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable


@pytest.mark.parametrize("family", list(FAMILIES))
def test_properties(target, conformance, pytestconfig, family):
    conformance.require_family(target, family, CASE_ID, None)

    @property_settings()
    @given(data=st.data())
    def search(data):
        check_drawn(conformance, target, data, replay_of(pytestconfig, __file__), family)

    try:
        search()
    except Unsatisfiable:
        pytest.skip(f"{target.name}: it could prepare none of the drawn models (see the skip records for why)")


def pin_named_cases(family: str):
    def pin(test):
        for spec in ALL_CASES:
            # A trained checkpoint is no drawable model.
            if spec.family == family and not spec.slow and spec.checkpoint is None:
                test = example(data=PinnedDraws(*named_example(spec), name=spec.name))(test)
        return test
    return pin


@pytest.mark.parametrize("family", list(FAMILIES))
def test_named_properties(target, conformance, pytestconfig, family):
    conformance.require_family(target, family, CASE_ID, None)

    @settings(phases=[Phase.explicit])
    @pin_named_cases(family)
    @given(data=st.data())
    def pinned(data):
        check_drawn(conformance, target, data, replay_of(pytestconfig, __file__), family)

    pinned()


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
