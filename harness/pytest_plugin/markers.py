"""Pytest glue: the markers the conformance suite uses, registered by the plugin itself, so that the
suite runs under any ini file with ``--strict-markers`` (a backend author's own, or none), and the
one marker that makes a test a conformance test.

Only tests marked ``gpt_conformance`` are the harness's: parametrized over the targets, deselected
when slow, recorded. Every module of ``gpt_conformance.cases`` carries it (``pytestmark``); another
suite's tests, even one with a ``target`` argument of its own, are left as they are.
"""

from __future__ import annotations

import pytest

CONFORMANCE = "gpt_conformance"

MARKERS = (
    f"{CONFORMANCE}: a gpt-conformance test: parametrized over the targets under test (--target), recorded",
    "cpu: runs on any CPU machine (laptop tier)",
    "gpu: needs an NVIDIA GPU (torch CUDA and Tripy / TensorRT tier)",
    "trn1: needs an AWS Trainium device (Neuron tier)",
    "slow: takes more than a few seconds; GPT-2-sized shapes",
    "nightly: GPT-2-sized shapes on every target, with --nightly; nightly(keep_target=NAME) keeps that one target's test in every --slow run",
    "latency: timing cases (pytest-benchmark; under xdist each runs alone, timed by the harness)",
    # pytest-xdist's own marker, used by cases/test_latency.py, registered here too for runs without xdist.
    "xdist_group(name): pytest-xdist's --dist loadgroup runs the tests of one group on one worker",
    "repro: replays one property example given with --repro (deselected without it)",
)


def is_conformance_test(node: pytest.Item | pytest.Function) -> bool:
    """Whether ``node`` (an item, or a function being parametrized) is marked ``gpt_conformance``."""
    return node.get_closest_marker(CONFORMANCE) is not None
