"""Public API (over the core layer): everything a backend target declares, returns or is handed.
A third-party target needs only this module.

A target turns the reference model into a *runnable* that returns full logits and the loss. The
snippet to start from, correct for every model family and run by the harness's own tests, is in
docs/plugins.md ("The target in one snippet"); ``examples/gpt-conformance-example-target`` is a
complete package. Register a target in either way:

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

The contract (docs/plugins.md, "The contract", says it in full, with each family's state-dict
keys and config fields generated from the code):

- ``prepare(model, config)`` is handed the *shared* fp32 reference model in eval mode: every
  target and the truth use that object. Never change it in place (``model.half()``,
  ``model.to("cuda")``, writing weights): convert a copy (``copy.deepcopy(model)``) or read its
  ``state_dict()``. The harness stamps the model and checks it after every ``prepare`` and every
  call; a change is an ``error`` verdict that names the target, and the model is put back.
- ``config`` is a ``GPTConfig`` (nanoGPT) or ``NanochatConfig`` (nanochat): ``family_of(config)``
  says which, and ``family_of(config).logits_and_loss(call, idx, targets)`` gets
  ``(logits [B, T, V], loss)`` from anything with the reference's forward signature.
  ``Capabilities(families=...)`` declares which families a target takes.
- ``run(idx, targets)`` is called under ``torch.no_grad()`` with contiguous CPU integer tensors
  ``[B, T]``; ``targets`` may be None, and where given may hold ``-1``: ignored positions (use
  ``ignore_index=-1`` in a loss of your own). It returns ``(logits, loss)``: CPU tensors, logits
  ``[B, T, vocab_size]`` of a float dtype for *every* position, loss a scalar or None. Any
  contiguity and float dtype is accepted. A wrong shape, dtype or device is an ``error``;
  NaN or Inf a ``fail``. Neither ever counts as a pass or stops the run. ``UnsupportedHere`` from
  ``run`` skips only on an input shape the capabilities do not accept: on a shape they accept it
  is an ``error`` (the target promised that shape).
- ``probe()`` runs when a test is set up; an unavailable target skips with its exact reason. A
  package in ``Requirements(packages=((import_name, extra),))`` that does not import is reported
  with ``pip install 'DISTRIBUTION[extra]'``: ``Requirements(distribution=...)`` names yours.
- ``prepare`` runs once per model and is cached for the session. Raising ``UnsupportedHere``
  skips; any other exception is an ``error`` verdict.
- ``environment()`` is merged into every record of the target, as ``target_environment``.
- A reduced-precision target declares ``low_precision = LowPrecision(compute_dtype, weights)``;
  with ``weights=WeightQuantization(bits, block_size)`` it reports the tensors it computes with,
  ``{linear name: QuantizedLinear}``, as its runnable's ``quantized_weights`` attribute
  (``ReturnsQuantizedWeights``) or from ``Target.quantized_weights(model)``.
- A known divergence is declared, with its reason, in ``Target.expected_failures``
  (``ExpectedFailure(case, check, reason)``) or by a plugin with ``registry.expect_failure``. It
  is reported as ``xfail``, never as a pass; once it passes it is ``xpass`` and the run is red,
  naming it. ``UnsupportedHere`` is for what cannot run, never to hide a wrong result.
- After a failing named-case verdict, the harness says where the target first diverges
  (``gpt_conformance.harness.checks.localize``). With ``Capabilities(returns_intermediates=True)``
  the runnable's ``intermediates(idx)`` (``ReturnsIntermediates``) is called once and must return
  ``{name: tensor}`` under the names of ``intermediate_names(n_layer)``; otherwise ``prepare`` is
  called on a few truncated models of the failing case to bisect the blocks, within a budget.
  Neither ever changes a verdict.
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
"""

from gpt_conformance.harness.core.errors import UnsupportedHere
from gpt_conformance.harness.core.policies import Gate, TolerancePolicy, get_policy, register_policy
from gpt_conformance.harness.core.probes import AVAILABLE, Availability
from gpt_conformance.harness.core.quant import LowPrecision, QuantizedLinear, WeightQuantization, quantize_model
from gpt_conformance.harness.core.targets import (
    ALL_FAMILIES,
    DEVICE_MARKERS,
    ENTRY_POINT_GROUP,
    Capabilities,
    Decoder,
    Decoding,
    ExpectedFailure,
    Requirements,
    ReturnsIntermediates,
    ReturnsQuantizedWeights,
    Runnable,
    Target,
    TargetRegistry,
    registry,
)
from gpt_conformance.reference.families import FAMILIES, family_of
from gpt_conformance.reference.intermediates import intermediate_names

__all__ = [
    "ALL_FAMILIES", "AVAILABLE", "Availability", "Capabilities", "Decoder", "Decoding", "DEVICE_MARKERS",
    "ENTRY_POINT_GROUP", "Gate",
    "Requirements", "Runnable", "Target", "TargetRegistry", "TolerancePolicy", "UnsupportedHere", "get_policy",
    "register_policy", "registry",
    # What a target may declare or return, and what tells the model families apart.
    "ExpectedFailure", "FAMILIES", "LowPrecision", "QuantizedLinear", "ReturnsIntermediates", "ReturnsQuantizedWeights",
    "WeightQuantization", "family_of", "intermediate_names", "quantize_model",
]
