"""``hf-gpt2``'s weight mapping, and Hugging Face GPT-2 as an independent check of the reference.

The mapping must be the exact inverse of ``gpt_conformance.reference.checkpoint.from_pretrained``: saving the
mapped Hugging Face model and loading it back gives the reference's weights bit for bit. In
float64 the two implementations must agree to rounding, which checks the reference itself.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.reference.checkpoint import from_pretrained
from gpt_conformance.reference.model import GPT
from gpt_conformance.targets.hf import HF_ACTIVATION, to_hf_model

pytest.importorskip("transformers", reason="hf-gpt2 needs the transformers package")

# Two float64 implementations of the same function differ by rounding only: measured max |diff|
# 6.7e-16 on the seed and no-bias cases (logits ~0.5). 1e-12 leaves 1000x room for other summation
# orders, and stays 1e6x below the 1e-6-sized effects of any architectural difference (a GELU
# variant alone moves the logits by ~1e-5, see test_a_gelu_mismatch_is_visible_in_float64).
FP64_AGREEMENT = 1e-12

VARIANTS = {
    "seed": {},
    "no-bias": {},
    "tanh-gelu": {"gelu": "tanh"},
    "manual-attention-eps": {"attn_impl": "manual", "layer_norm_eps": 1e-3},
}


def variant_model(variant: str) -> tuple[GPT, torch.Tensor]:
    spec = named_case("no-bias" if variant == "no-bias" else "seed")
    model, idx, _ = build_case(spec)
    changes = VARIANTS[variant]
    if changes:
        clone = GPT(replace(model.config, **changes)).eval()
        clone.load_state_dict(model.state_dict())
        model = clone
    return model, idx[:4]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mapping_is_the_exact_inverse_of_from_pretrained(variant, tmp_path):
    model, _ = variant_model(variant)
    to_hf_model(model).save_pretrained(tmp_path, safe_serialization=True)
    loaded = from_pretrained(tmp_path)
    assert loaded.config.gelu == model.config.gelu
    original, back = model.state_dict(), loaded.state_dict()
    for name, tensor in original.items():
        assert torch.equal(back[name], tensor), name
    if not model.config.bias:
        # from_pretrained always builds bias=True (GPT-2 has biases): ours came back as exact zeros.
        extra = set(back) - set(original)
        assert extra and all(not back[name].any() for name in extra)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hugging_face_gpt2_agrees_with_the_reference_in_float64(variant):
    model, idx = variant_model(variant)
    model64 = model.double()
    with torch.no_grad():
        ours = model64(idx, full_logits=True)[0]
        theirs = to_hf_model(model64)(input_ids=idx).logits
    assert theirs.dtype == torch.float64
    diff = float((theirs - ours).abs().max())
    assert diff <= FP64_AGREEMENT, f"{variant}: HF GPT-2 and the reference differ by {diff:.3g} in float64"


def test_a_gelu_mismatch_is_visible_in_float64(monkeypatch):
    """The cross-check can fail: the tanh GELU on an erf-GELU reference is caught."""
    model, idx = variant_model("seed")
    model64 = model.double()
    monkeypatch.setitem(HF_ACTIVATION, "erf", "gelu_new")
    with torch.no_grad():
        diff = float((to_hf_model(model64)(input_ids=idx).logits - model64(idx, full_logits=True)[0]).abs().max())
    assert diff > 1e3 * FP64_AGREEMENT, diff
