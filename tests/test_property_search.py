"""Proof that the property search finds config-dependent bugs, shrinks them, and stays quiet on
correct targets; and that the printed repro command replays the failure.

The searches run in-process through ``run_search`` (the same example body as
``cases/test_properties.py``) under the ``conformance-ci`` profile's property settings.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
from gpt_conformance.harness.api import registry
from gpt_conformance.harness.checks.properties import PropertyFailure, run_search
from gpt_conformance.harness.checks.session import ConformanceSession, Options
from gpt_conformance.harness.checks.strategies import InputCase, ModelCase, example_size
from gpt_conformance.harness.core.records import RecordWriter
from gpt_conformance.harness.pytest_plugin.profiles import property_settings
from hypothesis import settings

from tests.planted_properties import HeadsReversed, LastTokenEmbedding, PositionsWrapAt8
from tests.runner import run_pytest


@pytest.fixture
def session(tmp_path):
    return ConformanceSession(registry, RecordWriter(tmp_path / "records.jsonl", "test"), Options(report_dir=tmp_path))


def search_failures(session, target, hypothesis_settings, seed=None) -> list[BaseException]:
    """The failures a search raises (Hypothesis groups distinct ones); [] when it passes."""
    try:
        run_search(session, target, hypothesis_settings, seed=seed)
    except PropertyFailure as exc:
        return [exc]
    except Exception as exc:
        if not hasattr(exc, "exceptions"):  # not an ExceptionGroup of distinct failures
            raise
        return list(exc.exceptions)
    return []


# The smallest example showing each bug: n_layer 1, batch 1, vocabulary 2, and what the bug needs.
# Shrinking reaches exactly these (measured); the bounds leave a little room for Hypothesis versions.
PLANTED = [
    pytest.param(HeadsReversed(), {"n_layer": 1, "n_head": 2, "batch": 1, "seq_len": 2, "vocab_size": 4},
                 lambda size, inp: size["n_head"] == 2, id="heads-reversed"),
    pytest.param(PositionsWrapAt8(), {"n_layer": 1, "n_head": 2, "batch": 1, "seq_len": 9, "vocab_size": 4},
                 lambda size, inp: size["seq_len"] == 9, id="positions-wrap-at-8"),
    pytest.param(LastTokenEmbedding(), {"n_layer": 1, "n_head": 2, "batch": 1, "seq_len": 2, "vocab_size": 4},
                 lambda size, inp: any(size["vocab_size"] - 1 in row for row in inp.idx), id="last-token-embedding"),
]


@pytest.mark.slow
@pytest.mark.parametrize("planted, at_most, shows_bug", PLANTED)
def test_ci_search_finds_and_shrinks_planted_bug(planted, at_most, shows_bug, session):
    failures = search_failures(session, planted, property_settings("conformance-ci"))
    assert failures, f"the ci property search missed {planted.name} ({planted.description})"
    failure = failures[0]
    assert isinstance(failure, PropertyFailure), f"{planted.name}: expected a property failure, got {failure!r}"
    model_case, inp = ModelCase.from_dict(failure.example["model"]), InputCase.from_dict(failure.example["input"])
    size = example_size(model_case, inp)
    too_big = {k: (size[k], v) for k, v in at_most.items() if size[k] > v}
    assert not too_big, (f"the ci search found {planted.name} but shrank it only to {size} "
                         f"(over the small-example bound: {too_big})")
    assert shows_bug(size, inp), f"shrunk example {size} {inp.idx} is not at the bug's edge"
    assert "reproduce with:" in str(failure) and "--repro=" in str(failure)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["eager", "export"])
def test_no_false_alarm_on_correct_targets(name, session):
    """Five ci-sized searches (PROPERTY_EXAMPLES['conformance-ci'] models of up to three inputs each), each
    with its own seed instead of ci's fixed derandomization, find nothing on a correct target."""
    runs = settings(property_settings("conformance-ci"), derandomize=False)
    target = registry.get(name)
    exports_before = getattr(target, "export_count", 0)
    for seed in range(5):
        failures = search_failures(session, target, runs, seed=seed)
        assert not failures, f"false alarm on correct target {name} with seed {seed}:\n{failures[0]}"
    records = [json.loads(line) for line in session.writer.path.read_text().splitlines()]
    checked = [r for r in records if r["check"] == "property-parity-logits"]
    assert len(checked) >= 5, "every search checks at least one input"
    configs = {json.dumps(r["config"], sort_keys=True) for r in checked}
    exports = getattr(target, "export_count", 0) - exports_before
    assert exports <= len(configs), f"{exports} exports for {len(configs)} configs: an input change re-exported"


@pytest.mark.slow
def test_failure_prints_a_repro_command_that_replays_it(tmp_path):
    first, records, _ = run_pytest("cases/test_properties.py::test_properties", "-p", "tests.planted_properties",
                                   "--target", "planted-last-token-embedding", "--hypothesis-profile=conformance-ci",
                                   report_dir=tmp_path / "search")
    assert first.returncode == 1, first.stdout[-3000:]
    lines = [re.sub(r"^E?\s+", "", line) for line in first.stdout.splitlines()]  # pytest prefixes "E   "
    command = next(lines[i + 1] for i, line in enumerate(lines) if line == "reproduce with:")
    assert command.startswith("pytest ") and "--repro=" in command, command
    failed = [r for r in records if r["status"] == "fail"]
    assert failed and all(r["repro"] == command for r in failed), "fail records must carry the printed repro"
    assert failed[0]["example"]["input"]["idx"] == [[1]], failed[0]["example"]

    replay, _, _ = run_pytest(*shlex.split(command)[1:], report_dir=tmp_path / "replay")
    assert replay.returncode == 1, replay.stdout[-3000:]
    assert "1 failed" in replay.stdout and "property-parity" in replay.stdout, replay.stdout[-3000:]
