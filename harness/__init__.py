"""gpt-conformance's harness, in four layers; a module imports only its own layer and those below:

- ``harness.core``: what a target is, tolerance policies and verdicts, metrics, records, probes,
  the quantized-weight format, timing arithmetic. No pytest.
- ``harness.checks``: running targets and judging them: named-case parity, low-precision levels,
  properties (Hypothesis), greedy decoding, latency measurement. No pytest; outcomes are raised
  as ``harness.core.errors`` exceptions.
- ``harness.report``: records in, one self-contained HTML parity report out.
- ``harness.pytest_plugin`` (options, parametrization, hardware gating, outcomes) and
  ``harness.cli`` (``python -m harness``) on top.

``harness.api`` is the public face for backend authors. ``tests/test_layers.py`` checks the rule.
"""
