"""One test per hardware tier, so that ``pytest -m gpu`` or ``-m trn1`` always selects something:
on a machine without that hardware it skips with every target's reason, instead of pytest's
"no tests ran" (exit 5); with the hardware it fails if no target of the tier can run."""

import pytest

from harness.api import DEVICE_MARKERS

TIERS = [pytest.param(device, id=marker, marks=[getattr(pytest.mark, marker)]) for device, marker in DEVICE_MARKERS.items()]


@pytest.mark.parametrize("device", TIERS)
def test_tier_has_runnable_target(device, target_registry):
    tier = [t for t in target_registry if t.requirements.device == device]
    if not tier:
        pytest.skip(f"no registered target needs device {device!r}")
    probes = {t.name: t.probe() for t in tier}
    runnable = [name for name, a in probes.items() if a]
    if not runnable:
        pytest.skip("; ".join(f"{name}: {a.reason}" for name, a in probes.items()))
    assert runnable, f"tier {device}: no target can run"
