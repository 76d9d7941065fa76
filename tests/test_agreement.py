"""Records and pytest agree: every test's outcome matches its records
(``harness/pytest_plugin/agreement.py``), and no target disappears silently."""

from __future__ import annotations

import textwrap

import pytest

from tests.runner import run_pytest, shares_one_run

pytestmark = shares_one_run(__name__)

PLANTED_CASES = textwrap.dedent('''
    import pytest
    from gpt_conformance.harness.core.records import CheckRecord

    pytestmark = pytest.mark.gpt_conformance

    def test_passes_but_records_a_fail(target, conformance):
        conformance.record(CheckRecord(target, "planted", "planted", status="fail", message="planted"))

    def test_crashes_without_a_record(target):
        raise RuntimeError("planted crash")

    def test_skips_without_a_record(target):
        pytest.skip("planted skip")

    def test_skips_after_a_fail_record(target, conformance):
        conformance.record(CheckRecord(target, "planted", "planted", status="fail", message="planted"))
        pytest.skip("planted skip")

    def test_records_a_measurement(target, conformance):
        conformance.record(CheckRecord(target, "planted", "planted", status="recorded", message="m"))
''')


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agreement")
    (tmp / "test_planted_agreement.py").write_text(PLANTED_CASES)
    return run_pytest(str(tmp / "test_planted_agreement.py"), "--target", "eager",
                      report_dir=tmp / "records", cwd=tmp)


def by_test(records: list[dict], name: str) -> list[str]:
    return [r["status"] for r in records if (r.get("test_id") or "").endswith(f"{name}[eager]")]


@pytest.mark.parametrize("name, outcome, statuses", [
    ("test_passes_but_records_a_fail", "failure", ["fail"]),
    ("test_crashes_without_a_record", "failure", ["error"]),
    ("test_skips_without_a_record", "skipped", ["skip"]),
    ("test_skips_after_a_fail_record", "failure", ["fail"]),
    ("test_records_a_measurement", "passed", ["recorded"]),
])
def test_outcome_and_records_agree(planted_run, name, outcome, statuses):
    proc, records, outcomes = planted_run
    assert outcomes[f"{name}[eager]"] == outcome, proc.stdout[-3000:]
    assert by_test(records, name) == statuses


def test_a_disagreement_says_why(planted_run):
    assert "the test passed, but its records hold 1 fail verdict(s)" in planted_run.proc.stdout


def test_a_built_in_target_that_fails_to_load_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("BROKEN_ENTRY_POINT", "built-in")
    proc, records, _ = run_pytest("-p", "tests.broken_entry_points", "cases/test_parity.py", "-k", "seed",
                                  report_dir=tmp_path / "records")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "a built-in target failed to load" in proc.stderr and "planted import failure" in proc.stderr
    assert "Traceback" not in proc.stderr and not records


def test_a_third_party_target_that_fails_to_load_is_an_error_and_a_red_run(tmp_path, monkeypatch):
    monkeypatch.setenv("BROKEN_ENTRY_POINT", "third-party")
    proc, records, _ = run_pytest("-p", "tests.broken_entry_points", "cases/test_parity.py", "--target", "eager",
                                  "-k", "seed and logits and not nanochat", report_dir=tmp_path / "records")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "failed to load entry point planted-broken" in proc.stdout
    (error,) = [r for r in records if r["target"] == "planted-broken"]
    assert error["status"] == "error" and "someones-backend" in error["message"]


def test_a_tier_with_its_hardware_but_no_runnable_target_is_red_in_pytest_and_in_the_records(tmp_path):
    # The tier test is not parametrized by a target, so the outcome hook cannot record it: it
    # records its error on each target of the tier itself, and the report, built from records, is red.
    proc, records, outcomes = run_pytest("-p", "tests.uninstalled_backend", "cases/test_tiers.py", "-m", "cpu",
                                         "--target", "uninstalled-backend", report_dir=tmp_path / "records")
    assert outcomes == {"test_tier_has_runnable_target[cpu]": "failure"}, proc.stdout[-3000:]
    (error,) = records
    assert (error["target"], error["check"], error["status"]) == ("uninstalled-backend", "runnable", "error")
    assert "no target of the tier can run" in error["message"]
    assert "planted_backend_that_is_not_installed" in error["message"]


def test_a_record_needs_a_verdict_or_a_status():
    """A check written without a verdict and without a status is refused, not written as an error."""
    from gpt_conformance.harness.core.records import CheckRecord
    from gpt_conformance.targets.eager import EagerTarget

    with pytest.raises(ValueError, match="'logits' on 'seed' for 'eager': a record needs a verdict or a status"):
        CheckRecord(EagerTarget(), "seed", "logits")
    body = CheckRecord(EagerTarget(), "seed", "logits", status="skip", message="why").body()
    assert (body["status"], body["message"], body["policy"], body["config"]) == ("skip", "why", "fp32", {})
