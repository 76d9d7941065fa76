"""A ``-p`` plugin that registers a CPU target whose backend package is not installed: run alone
(``--target uninstalled-backend``), the cpu tier has its hardware but no target that can run."""

from gpt_conformance.harness.api import Requirements, Target


class UninstalledBackend(Target):
    name = "uninstalled-backend"
    precision = "fp32"
    description = "a CPU target whose backend package is missing"
    requirements = Requirements(packages=(("planted_backend_that_is_not_installed", None),))

    def prepare(self, model, config):
        raise AssertionError("never prepared: its probe says it cannot run")


def pytest_gpt_conformance_register(registry):
    registry.register(UninstalledBackend(), source="tests.uninstalled_backend")
