"""The public plugin API, end to end, as a third party uses it.

Each run is a separate pytest process, as in CI: the example package under ``examples/`` is
loaded with ``pytest -p`` and, in a second test, installed so that its entry point is found; a
plugin of misbehaving targets proves that a broken backend becomes an ``error`` verdict with its
message, never a pass and never a crash of the whole run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from gpt_conformance.harness import api
from gpt_conformance.harness.api import Target, TargetRegistry, TolerancePolicy, get_policy, register_policy
from gpt_conformance.harness.core.records import read_records
from gpt_conformance.reference.cases import NAMED_CASES

from tests.runner import ROOT, run_pytest

EXAMPLE = ROOT / "examples" / "gpt-conformance-example-target"
# The nanoGPT named cases that need no GPT-2-sized model, x (logits, loss). The example
# target implements the nanoGPT family only (its nanochat cases would skip, saying so).
FAST_CASES = ["cases/test_parity.py", "-m", "not slow", "-k", "not nanochat"]
FAST_NANOGPT_CASES = [spec for spec in NAMED_CASES if not spec.slow]


def test_example_target_loaded_with_dash_p_passes_every_named_case(tmp_path):
    proc, _, outcomes = run_pytest(*FAST_CASES, "-p", "gpt_conformance_example.plugin",
                                "--target", "example-numpy", pythonpath=(EXAMPLE / "src",), report_dir=tmp_path / "reports")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(outcomes) == 2 * len(FAST_NANOGPT_CASES) and set(outcomes.values()) == {"passed"}, outcomes
    records = read_records([tmp_path / "reports"])
    assert {r["status"] for r in records} == {"pass"}
    # Judged under the precision policy the example package registers itself.
    assert {r["policy"] for r in records} == {"example-numpy-fp32"}


@pytest.mark.slow
def test_example_target_installed_is_found_through_its_entry_point(tmp_path):
    """pip-installs the example (its own pyproject.toml) into a directory, as CI would into a venv."""
    pytest.importorskip("setuptools", reason="building the example package needs setuptools in this venv")
    site, source = tmp_path / "site", tmp_path / "example"
    # Built from a copy: a build writes build/ and *.egg-info next to the sources it builds.
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(source)], check=False, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert list(site.glob("gpt_conformance_example_target-*.dist-info/entry_points.txt"))

    listing, _, _ = run_pytest("--list-targets", pythonpath=(site,), report_dir=tmp_path / "reports")
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "example-numpy" in listing.stdout and "can run here" in listing.stdout

    proc, _, outcomes = run_pytest(*FAST_CASES, "--target", "example-numpy", pythonpath=(site,), report_dir=tmp_path / "reports")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(outcomes) == 2 * len(FAST_NANOGPT_CASES) and set(outcomes.values()) == {"passed"}, outcomes


def test_broken_plugin_targets_are_errors_with_their_message_never_passes(tmp_path):
    names = ["plugin-raises-in-prepare", "plugin-wrong-shape", "plugin-wrong-dtype", "plugin-not-a-tuple",
             "plugin-nan-output", "plugin-halves-shared-model", "plugin-writes-shared-weights",
             "plugin-refuses-a-promised-shape", "plugin-custom-policy"]
    selection = [arg for name in names for arg in ("--target", name)]
    proc, _, outcomes = run_pytest("cases/test_parity.py", "-k", "seed and not nanochat", "-p", "tests.broken_plugin",
                                *selection, report_dir=tmp_path / "reports")
    # The run completes (exit 1: tests failed), it does not crash (exit 2/3) or pass.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for check in ("logits", "loss"):
        for name in names:
            expected = "passed" if name == "plugin-custom-policy" else "failure"
            assert outcomes[f"test_{check}_parity[{name}-seed]"] == expected, (name, check, outcomes)

    by_target: dict[str, list[dict]] = {}
    for record in read_records([tmp_path / "reports"]):
        by_target.setdefault(record["target"], []).append(record)
    expected_messages = {
        "plugin-raises-in-prepare": "RuntimeError: backend compiler crashed: unsupported op aten::planted",
        "plugin-wrong-shape": "returned logits of shape (64, 1, 65), expected (64, 32, 65)",
        "plugin-wrong-dtype": "returned logits of dtype torch.int32, expected a float dtype",
        "plugin-not-a-tuple": "returned Tensor, expected (logits, loss)",
        "plugin-halves-shared-model": "target 'plugin-halves-shared-model' changed the shared reference model in "
                                      "place during prepare (lm_head.weight dtype torch.float32 -> torch.float16",
        "plugin-writes-shared-weights": "target 'plugin-writes-shared-weights' changed the shared reference model in "
                                        "place during run (lm_head.weight values written in place, "
                                        "transformer.wte.weight values written in place)",
        "plugin-refuses-a-promised-shape": "raised UnsupportedHere on a 64x32 input, which its capabilities accept: "
                                           "this engine was built for batch 1",
    }
    for name, message in expected_messages.items():
        records = by_target[name]
        assert records and all(r["status"] == "error" for r in records), records
        assert any(message in r["message"] for r in records), [r["message"] for r in records]
    nan_records = by_target["plugin-nan-output"]
    assert nan_records and all(r["status"] == "fail" for r in nan_records)
    assert any("non-finite" in r["message"] for r in nan_records)
    custom = by_target["plugin-custom-policy"]
    assert {(r["status"], r["policy"]) for r in custom} == {("pass", "plugin-fp32-custom")}


class _Named(Target):
    name = "policy-test-target"


def test_registering_a_target_with_an_unknown_precision_fails_early():
    target = _Named()
    target.precision = "no-such-precision"
    with pytest.raises(KeyError, match="no tolerance policy 'no-such-precision'"):
        TargetRegistry().register(target)


def test_plugin_policies_register_once_and_conflicts_are_refused():
    base = get_policy("fp32")
    policy = TolerancePolicy("test-plugin-policy", base.logit_gates, base.loss_gates, description="test")
    assert register_policy(policy) is policy
    assert register_policy(policy) is policy  # the same policy again (a plugin imported twice) is fine
    other = TolerancePolicy("test-plugin-policy", base.logit_gates, (), description="different gates")
    with pytest.raises(ValueError, match="already registered"):
        register_policy(other)
    target = _Named()
    target.precision = "test-plugin-policy"
    assert TargetRegistry().register(target) is target


def test_every_public_name_is_documented():
    """gpt_conformance.harness.api's docstrings are the plugin API's reference documentation."""
    undocumented = [name for name in api.__all__
                    if callable(getattr(api, name)) and not (getattr(api, name).__doc__ or "").strip()]
    assert not undocumented, undocumented
