"""Planted-bug targets for the static-shape (Neuron) pipeline, each a bug such pipelines have.

- ``planted-left-padding``: pads on the left (its decode prefill too) and reads the last positions, as the third-party
  nanoGPT4NKI example does; nanoGPT has no attention mask, so real tokens attend to the pads and sit at
  shifted absolute positions (docs/sources.md#padded-static-shapes-and-positions).
- ``planted-loss-over-pads``: the loss averages over padded positions too (pad targets 0).
- ``planted-weightless-cache-key``: the artifact cache key leaves out the weights, so a second
  model with the same config and bucket silently gets the first model's compiled graph.

Load them with ``pytest -p tests.planted_neuron``; the parity cases must fail on them where the
bug shows (the first two on any padded case, e.g. ``one-token``), and ``tests/test_neuron.py``
checks that they do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gpt_conformance.targets.neuron import PAD_ID, BucketedRunner, JitTraceCompiler, StaticShapeTarget


class LeftPaddingRunner(BucketedRunner):
    def pad(self, idx, bucket):
        padded = torch.full(bucket, PAD_ID, dtype=torch.long)
        padded[: idx.size(0), bucket[1] - idx.size(1):] = idx
        return padded

    def real_positions(self, out, batch, seq_len):
        return out[:batch, out.size(1) - seq_len:].contiguous()


class LossOverPadsRunner(BucketedRunner):
    def loss(self, logits, targets, padded_out):
        padded_targets = torch.full(padded_out.shape[:2], PAD_ID, dtype=torch.long)
        padded_targets[: targets.size(0), : targets.size(1)] = targets
        return F.cross_entropy(padded_out.reshape(-1, padded_out.size(-1)), padded_targets.reshape(-1), ignore_index=-1)


class PlantedStaticTarget(StaticShapeTarget):
    def __init__(self, name: str, description: str, runner=BucketedRunner, **kwargs):
        super().__init__(name, "fp32", description, JitTraceCompiler(), device="cpu", **kwargs)
        self.runner = runner


class WeightlessKeyTarget(PlantedStaticTarget):
    def graph_for(self, model, weights, bucket):
        return super().graph_for(model, "same-for-every-model", bucket)


def planted_targets(**kwargs) -> list[StaticShapeTarget]:
    return [
        PlantedStaticTarget("planted-left-padding", "left padding without an attention mask", LeftPaddingRunner,
                            **kwargs),
        PlantedStaticTarget("planted-loss-over-pads", "loss averaged over padded positions too", LossOverPadsRunner,
                            **kwargs),
        WeightlessKeyTarget("planted-weightless-cache-key", "artifact cache key without the weights", **kwargs),
    ]


def pytest_gpt_conformance_register(registry):
    for target in planted_targets():
        registry.register(target, source="tests.planted_neuron")
