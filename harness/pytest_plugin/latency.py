"""Pytest glue: the latency tier's options (``--latency-profile``, ``--peak-flops``) and its
``latency_settings`` fixture. The measuring itself is ``gpt_conformance.harness.checks.latency``."""

from __future__ import annotations

import dataclasses
import os

import pytest
from gpt_conformance.harness.checks.latency import PROFILE_ENV, PROFILES, LatencySettings
from gpt_conformance.harness.core.peak_flops import parse_peak_option
from gpt_conformance.harness.pytest_plugin import quiet
from gpt_conformance.harness.pytest_plugin.profiles import NIGHTLY

SETTINGS_KEY = pytest.StashKey[LatencySettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpt-conformance-latency", "GPT conformance latency tier (marker `latency`)")
    group.addoption("--latency-profile", choices=sorted(PROFILES), default=None,
                    help="rounds and generated tokens of the latency cases: quick (default) or nightly; "
                         f"default from ${PROFILE_ENV}, else nightly when --hypothesis-profile=conformance-nightly")
    group.addoption("--peak-flops", action="append", default=[], metavar="[DEVICE=]FLOPS",
                    help="peak FLOP/s for MFU, e.g. 989e12 or cuda=989e12 (DEVICE: cpu, cuda, neuron); "
                         "repeatable; default: a datasheet table for A100/H100/H200 and trn1, an estimate for CPUs")


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("latency_profile") or os.environ.get(PROFILE_ENV)
    if name is None:
        name = "nightly" if config.getoption("hypothesis_profile", None) == NIGHTLY else "quick"
    if name not in PROFILES:
        raise pytest.UsageError(f"${PROFILE_ENV}={name!r}: unknown latency profile; known: {sorted(PROFILES)}")
    try:
        overrides = parse_peak_option(config.getoption("peak_flops"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS_KEY] = LatencySettings(PROFILES[name], overrides)


@pytest.fixture(scope="session")
def latency_settings(request: pytest.FixtureRequest) -> LatencySettings:
    """The run's settings; under xdist, where this worker runs each latency case alone and the user
    did not turn timing off, the harness times the rounds (pytest-benchmark does not under xdist)."""
    settings = request.config.stash[SETTINGS_KEY]
    alone = quiet.LOCK_KEY in request.config.stash and not request.config.getoption("benchmark_disable", False)
    return dataclasses.replace(settings, harness_timer=alone)


