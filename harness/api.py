"""Public API (over the core layer): the public API for backend targets. A third-party target needs only this module.

A target turns the reference model into a *runnable* that returns full logits and the loss::

    from gpt_conformance.harness.api import Target, Capabilities, Requirements

    class MyBackend(Target):
        name = "my-backend"
        precision = "fp32-reassoc"          # a registered TolerancePolicy name
        requirements = Requirements(packages=(("my_backend", "my-extra"),), device="cpu")
        capabilities = Capabilities(dynamic_shapes=True)

        def prepare(self, model, config):
            compiled = my_backend.compile(model)        # once per model; the harness caches it
            def run(idx, targets=None):
                return compiled(idx, targets)           # (logits [B, T, V], loss or None)
            return run

    TARGETS = [MyBackend()]

Register it in either way:

1. an entry point in your ``pyproject.toml``::

       [project.entry-points."gpt_conformance.targets"]
       my-backend = "my_package.targets:TARGETS"

   (the object may be a Target, an iterable of Targets, or a callable returning either);
2. a pytest plugin (``pytest -p my_package.plugin``) implementing the hook::

       def pytest_gpt_conformance_register(registry):
           registry.register(MyBackend())

Precision classes are ``TolerancePolicy`` objects; register new ones with ``register_policy``
at import time of the module that defines the target (registration checks that the target's
``precision`` names a registered policy).

What the harness does with a target, so a plugin author knows what to expect:

- ``probe()`` runs when a test is set up; an unavailable target skips with its exact reason.
- ``prepare(model, config)`` runs once per model and is cached for the session: compile, export
  or convert there. Raising ``UnsupportedHere`` skips; any other exception is an ``error`` verdict.
- ``run(idx, targets)`` gets validated int64 token ids ``[B, T]``; its output is validated
  (a tuple of logits ``[B, T, vocab_size]`` of a float dtype, and a scalar loss when ``targets``
  are given, unless ``capabilities.returns_loss`` is False). Anything else is an ``error`` verdict
  with the reason; NaN or Inf is a ``fail``. Neither ever counts as a pass or stops the run.
- ``environment()`` is merged into every record of the target, as ``target_environment``.
- After a failing named-case verdict, the harness says where the target first diverges
  (``gpt_conformance.harness.checks.localize``). With ``Capabilities(returns_intermediates=True)`` the runnable's
  ``intermediates(idx)`` is called once and must return ``{name: tensor}`` under the names of
  ``gpt_conformance.reference.intermediates.intermediate_names(n_layer)`` (hidden states ``[B, T, n_embd]``,
  ``logits`` ``[B, T, V]``; names it cannot expose may be left out); otherwise ``prepare`` is
  called on a few truncated models of the failing case (the first k blocks, then the final norm
  and head) to bisect the blocks, within a budget. Neither ever changes a verdict.

- **Decoding** (``gpt_conformance.harness.checks.decode_path``, docs/decode.md): a target that
  serves text as production backends do, a prefill then one token at a time over a KV cache,
  declares ``Capabilities(decode=Decoding(max_cache_len=..., padding="right" | "left" | None,
  reusable_state=...))`` and its runnable is also a ``Decoder``::

      def prefill(self, idx, lengths=None, state=None):   # -> (logits [B, T, V], state)
      def step(self, state, tokens):                       # tokens [B, 1] -> (logits [B, 1, V], state)

  The state is the target's own object (a cache, device buffers, a position): the harness only
  hands it back. Each step is judged against the fp64 full-forward truth at its position, greedy
  text runs through the cache, and the steps are compared with the target's own forward pass,
  a ragged batch with each row alone and a reused state with a fresh one. Without ``decode``
  the greedy check runs full forward passes and the report says so.

A complete example package: ``examples/gpt-conformance-example-target`` (README: "Add your backend").
"""

from gpt_conformance.harness.core.errors import UnsupportedHere
from gpt_conformance.harness.core.policies import Gate, TolerancePolicy, get_policy, register_policy
from gpt_conformance.harness.core.probes import AVAILABLE, Availability
from gpt_conformance.harness.core.targets import (
    ALL_FAMILIES,
    DEVICE_MARKERS,
    ENTRY_POINT_GROUP,
    Capabilities,
    Decoder,
    Decoding,
    Requirements,
    Runnable,
    Target,
    TargetRegistry,
    registry,
)

__all__ = [
    "ALL_FAMILIES", "AVAILABLE", "Availability", "Capabilities", "Decoder", "Decoding", "DEVICE_MARKERS", "ENTRY_POINT_GROUP", "Gate",
    "Requirements", "Runnable", "Target", "TargetRegistry", "TolerancePolicy", "UnsupportedHere", "get_policy",
    "register_policy", "registry",
]
