"""The second way to register: ``pytest -p gpt_conformance_example.plugin`` (no install needed)."""

from gpt_conformance_example.targets import TARGETS


def pytest_gpt_conformance_register(registry):
    for target in TARGETS:
        registry.register(target, source="gpt_conformance_example.plugin")
