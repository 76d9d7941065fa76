"""The export targets: one export per config, reused across shapes and weights."""

import pytest
import torch

from harness.api import registry
from reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=16, vocab_size=29, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope="module", autouse=True)
def builtin_targets():
    if "export" not in registry:
        registry.load_entry_points()


@pytest.mark.parametrize("name", ["export", "export-strict", "export-serdes"])
def test_one_export_per_config_across_shapes_and_weights(name):
    target = registry.get(name)
    before = target.export_count
    for seed in (0, 1):  # two models of the same config: weights are inputs, so no re-export
        torch.manual_seed(seed)
        model = GPT(CONFIG).eval()
        run = target.prepare(model, CONFIG)
        for batch, seq in [(1, 1), (3, 7), (2, 16), (5, 2)]:
            idx = torch.randint(0, 29, (batch, seq))
            targets = torch.randint(0, 29, (batch, seq))
            logits, loss = run(idx, targets)
            ref_logits, ref_loss = model(idx, targets)
            # The exported graph runs the same aten kernels as eager: measured bit-identical.
            torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
            torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0)
        run(torch.randint(0, 29, (2, 4)))  # the logits-only program is a second export
    assert target.export_count - before == 2


def test_block_size_one_keeps_sequence_static():
    config = GPTConfig(block_size=1, vocab_size=5, n_layer=1, n_head=1, n_embd=4)
    model = GPT(config).eval()
    run = registry.get("export").prepare(model, config)
    idx = torch.randint(0, 5, (3, 1))
    torch.testing.assert_close(run(idx)[0], model(idx, full_logits=True)[0], rtol=0, atol=0)
