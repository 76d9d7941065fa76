"""The pytest plugin as users meet it: tiers, target selection, corrupt goldens, exit codes."""

import json
import shutil

import pytest

from reference.goldens import GOLDEN_DIR
from tests.runner import run_pytest, statuses


@pytest.mark.parametrize("tier, reason", [("gpu", "no CUDA device"), ("trn1", "no Neuron device")])
def test_hardware_tier_without_hardware_skips_with_reason_and_exits_0(tmp_path, tier, reason):
    proc, _, _ = run_pytest("-m", tier, "-rs", report_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout and "passed" not in proc.stdout.splitlines()[-1]
    assert reason in proc.stdout


def test_unknown_target_is_a_usage_error(tmp_path):
    proc, _, _ = run_pytest("--target", "no-such-backend", report_dir=tmp_path)
    assert proc.returncode == 4
    assert "unknown target; registered:" in proc.stderr and "'eager'" in proc.stderr


def test_list_targets_exits_0(tmp_path):
    proc, _, _ = run_pytest("--list-targets", report_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eager" in proc.stdout and "can run here" in proc.stdout


def test_corrupt_golden_is_an_error_not_a_pass_nor_regenerated(tmp_path):
    goldens = tmp_path / "goldens"
    shutil.copytree(GOLDEN_DIR, goldens, ignore=shutil.ignore_patterns("gpt2-*"))
    meta = json.loads((goldens / "seed.json").read_text())
    meta["sha256"] = "0" * 64
    (goldens / "seed.json").write_text(json.dumps(meta))
    before = (goldens / "seed.safetensors").read_bytes()
    proc, records, _ = run_pytest("cases/test_parity.py", "-k", "seed", "--target", "eager", "--golden-dir",
                               str(goldens), report_dir=tmp_path / "records")
    assert proc.returncode == 1
    got = statuses(records)
    assert got[("eager", "seed")] == "error"
    assert "golden for 'seed' unusable" in proc.stdout and "is corrupt" in proc.stdout
    assert (goldens / "seed.safetensors").read_bytes() == before
    assert json.loads((goldens / "seed.json").read_text())["sha256"] == "0" * 64
