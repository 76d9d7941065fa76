"""Proof that the parity cases catch bugs: every planted-bug target fails, correct targets pass.

Runs the real conformance cases in a subprocess, exactly as ``pytest -m cpu`` would, with the
planted targets of ``tests/planted.py`` registered through the plugin hook.
"""

import pytest

from reference.cases import NAMED_CASES
from tests.planted import PLANTED
from tests.runner import run_pytest, statuses

CORRECT = ["eager", "export", "export-strict", "export-serdes"]
FAST = [spec.name for spec in NAMED_CASES if not spec.slow]


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    report_dir = tmp_path_factory.mktemp("records")
    args = ["-p", "tests.planted", "cases/test_parity.py", "-m", "not slow"]
    for name in CORRECT + [t.name for t in PLANTED]:
        args += ["--target", name]
    return run_pytest(*args, report_dir=report_dir)


@pytest.mark.parametrize("check", ["logits", "loss"])
def test_correct_targets_pass_every_named_case(planted_run, check):
    _, records = planted_run
    got = statuses(records, check)
    for target in CORRECT:
        for case in FAST:
            assert got[(target, case)] == "pass", f"{target} on {case} ({check}): {got[(target, case)]}"


@pytest.mark.parametrize("planted", PLANTED, ids=lambda t: t.name)
@pytest.mark.parametrize("check", ["logits", "loss"])
def test_planted_bug_is_flagged(planted_run, planted, check):
    proc, records = planted_run
    got = statuses(records, check)
    assert got[(planted.name, "seed")] == "fail", f"{planted.name} ({planted.description}) passed `seed` {check}"
    failing = sorted(case for case in FAST if got[(planted.name, case)] == "fail")
    # A causal-mask bug cannot show with one token; every other case must catch every bug.
    invisible = {"one-token"} if planted.name == "planted-mask-off-by-one" else set()
    assert set(failing) == set(FAST) - invisible, f"{planted.name} slipped through {set(FAST) - set(failing)}"
    assert f"test_{check}_parity[{planted.name}-seed]" in proc.stdout


def test_failing_records_say_how_far_off(planted_run):
    _, records = planted_run
    record = next(r for r in records if r["target"] == "planted-layernorm-eps" and r["case"] == "seed"
                  and r["check"] == "logits")
    assert record["message"].startswith("out of tolerance")
    for gate in record["gates"]:
        assert gate["value"] > gate["bound"] and gate["min_multiplier"] > 2.0
    for key in ("config", "input_shape", "seed", "policy", "duration_s", "environment"):
        assert record[key] is not None, key
    assert record["environment"]["torch"] and record["input_shape"] == [64, 32]
