"""One test per hardware tier, so that ``pytest -m gpu`` or ``-m trn1`` always selects something.

Without the tier's hardware it skips with every target's reason, instead of pytest's "no tests
ran" (exit 5). With the hardware present it fails if no target of the tier can run, so a GPU or
Trainium runner with a broken backend install cannot go green by skipping everything. That
failure is also an ``error`` record for each target of the tier, so the report is red where pytest
is.
"""

import pytest
from gpt_conformance.harness.api import DEVICE_MARKERS
from gpt_conformance.harness.core.probes import AVAILABLE, probe_cuda, probe_neuron_device
from gpt_conformance.harness.core.records import CheckRecord

pytestmark = pytest.mark.gpt_conformance  # a harness test (harness/pytest_plugin/markers.py)

TIERS = [pytest.param(device, id=marker, marks=[getattr(pytest.mark, marker)]) for device, marker in DEVICE_MARKERS.items()]
DEVICE_PROBES = {"cpu": lambda: AVAILABLE, "cuda": probe_cuda, "neuron": probe_neuron_device}


@pytest.mark.parametrize("device", TIERS)
def test_tier_has_runnable_target(device, targets_under_test, conformance):
    tier = [t for t in targets_under_test if t.requirements.device == device]
    if not tier:
        pytest.skip(f"no target under test needs device {device!r}")
    probes = {t.name: t.probe() for t in tier}
    reasons = "; ".join(f"{name}: {a.reason}" for name, a in probes.items() if not a)
    hardware = DEVICE_PROBES[device]()
    if not hardware:
        pytest.skip(f"{hardware.reason} ({reasons})")
    if not any(probes.values()):
        message = f"this machine has the {device} hardware but no target of the tier can run: {reasons}"
        for target in tier:
            conformance.record(CheckRecord(target, "tier", "runnable", status="error", message=message))
        pytest.fail(message, pytrace=False)
