"""The second way to register: ``pytest -p gpt_conformance_example.plugin`` (no install needed)."""

from gpt_conformance_example import nanochat, targets


def pytest_gpt_conformance_register(registry):
    for target in targets.TARGETS + nanochat.TARGETS:
        registry.register(target, source="gpt_conformance_example.plugin")
