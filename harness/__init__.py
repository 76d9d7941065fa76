"""gpt-conformance's harness, in four layers; a module imports only its own layer and those below:

- ``gpt_conformance.harness.core``: what a target is, tolerance policies and verdicts, metrics, records, probes,
  the quantized-weight format, timing arithmetic. No pytest.
- ``gpt_conformance.harness.checks``: running targets and judging them: named-case parity, low-precision levels,
  properties (Hypothesis), greedy decoding, latency measurement. No pytest; outcomes are raised
  as ``gpt_conformance.harness.core.errors`` exceptions.
- ``gpt_conformance.harness.report``: records in, one self-contained HTML parity report out.
- ``gpt_conformance.harness.pytest_plugin`` (options, parametrization, hardware gating, outcomes) and
  ``gpt_conformance.harness.cli`` (``python -m gpt_conformance``) on top.

``gpt_conformance.harness.api`` is the public face for backend authors. ``tests/test_layers.py`` checks the rule.
"""
