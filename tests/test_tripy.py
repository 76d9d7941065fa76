"""CPU checks of the Tripy targets' layout and gating: the reference-to-Tripy state dict, the
quantized-weight layout and TensorRT's re-quantization of it, the causal mask, the compile bounds,
the targets' registration and probes. The nvtripy graph itself runs on CPU through a stand-in in
``tests/test_tripy_standin.py``; nvtripy's signatures are checked in ``tests/test_tripy_signatures.py``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.core.probes import AVAILABLE, Availability
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.targets import tripy, tripy_layout
from gpt_conformance.targets.tripy_layout import (
    MODES,
    LinearQuant,
    causal_mask,
    expand_scale,
    linear_names,
    linear_quant,
    quantized_weight_tensors,
    shape_bounds,
    tensorrt_dequantize,
    tripy_state_dict,
)

TINY = GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=4, n_embd=32)


# --- a test double of harness.core.quant's QuantizedLinear (its contract) -------------------

@dataclass
class FakeQuantizedLinear:
    codes: torch.Tensor  # int8 [out, in]
    scales: torch.Tensor  # [out] or [out, in / block_size]
    block_size: int | None
    bits: int

    def dequantize(self) -> torch.Tensor:
        """codes * scale in float64, where the product is exact."""
        scales = self.scales.double()
        scales = scales.unsqueeze(1) if scales.dim() == 1 else scales.repeat_interleave(self.block_size, dim=1)
        return self.codes.double() * scales


def rtn_quantize(weight: torch.Tensor, bits: int, block_size: int | None = None) -> FakeQuantizedLinear:
    """Symmetric round-to-nearest with amax scales: per output channel, or per block of
    ``block_size`` along in_features."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().double()
    if block_size is None:
        scales = w.abs().amax(dim=1) / qmax
        codes = torch.round(w / scales.unsqueeze(1))
    else:
        blocks = w.view(w.shape[0], -1, block_size)
        scales = blocks.abs().amax(dim=2) / qmax
        codes = torch.round(blocks / scales.unsqueeze(2)).view_as(w)
    return FakeQuantizedLinear(codes.clamp(-qmax - 1, qmax).to(torch.int8), scales.float(), block_size, bits)


def quantize_model(model: GPT, bits: int, block_size: int | None = None) -> dict[str, FakeQuantizedLinear]:
    """Every block linear quantized; the tied lm_head stays float, as modelopt leaves it."""
    modules = dict(model.named_modules())
    return {name: rtn_quantize(modules[name].weight, bits, block_size) for name in linear_names(model.config)
            if name != "lm_head"}


def case(config: GPTConfig, seed: int = 0, batch: int = 3, seq: int | None = None) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    idx = torch.randint(0, config.vocab_size, (batch, seq or config.block_size))
    return model, idx


# --- names, layouts, masks: the float modes ------------------------------------------------

def test_causal_mask_matches_reference_buffer():
    model = GPT(TINY)
    buffer = model.transformer.h[0].attn.bias
    mask = causal_mask(TINY.block_size, torch.float16)
    assert mask.shape == buffer.shape and mask.dtype == torch.float16
    assert torch.equal(mask < 0.5, ~buffer)
    with pytest.raises(ValueError, match="block_size"):
        causal_mask(0)


def test_state_dict_layout_and_dtype():
    model, _ = case(replace(TINY, bias=False))
    state, _ = tripy_state_dict(model, torch.float16)
    assert all(t.dtype == torch.float16 and t.is_contiguous() for t in state.values())
    # tp.Linear and tp.Embedding store what nn.Linear and nn.Embedding store: nothing transposed.
    for key, tensor in model.state_dict().items():
        assert state[key].shape == tensor.shape, key
    # tp.LayerNorm always has a bias: zeros stand in for bias=False.
    assert torch.equal(state["transformer.ln_f.bias"], torch.zeros(TINY.n_embd, dtype=torch.float16))
    # One mask tensor shared by every layer (converted to Tripy once).
    assert state["transformer.h.0.attn.mask"] is state["transformer.h.1.attn.mask"]


# --- quantized weights ---------------------------------------------------------------------

QUANT_MODES = {"int8-per-channel": (8, None), "int4-block-8": (4, 8), "int4-block-16": (4, 16)}


@pytest.mark.parametrize("block", [8, 16])
def test_int4_scale_layout_agrees_with_dequantize(block):
    weight = torch.randn(24, 32) * 0.02
    q = rtn_quantize(weight, 4, block)
    scale = tripy_layout.tripy_weight_scale(q, torch.float64)
    assert scale.shape == (24, 32 // block)  # [out, in/block]: TensorRT blocks along in_features
    torch.testing.assert_close(tensorrt_dequantize(q.codes, scale, None), q.dequantize(), rtol=0, atol=0)


def tripy_example_scale_layout(q, dtype):
    """Tripy's nanoGPT loader: reshape the [out, in/B] block scales to (-1, in_features)."""
    return q.scales.reshape(-1, q.codes.shape[1]).to(dtype)


def test_int4_scales_on_the_wrong_axis_are_caught(monkeypatch):
    weight = torch.randn(32, 32) * 0.02  # square, and out divisible by in/B: the wrong layout loads
    q = rtn_quantize(weight, 4, 8)
    wrong = tripy_example_scale_layout(q, torch.float64)
    assert wrong.shape == (32 // 8, 32)  # a legal [out/B, in] block scale: TensorRT would take it
    assert not torch.allclose(tensorrt_dequantize(q.codes, wrong, None), q.dequantize())
    monkeypatch.setattr(tripy_layout, "tripy_weight_scale", tripy_example_scale_layout)
    with pytest.raises(ValueError, match="scales do not fit the codes"):
        quantized_weight_tensors("layer", q, LinearQuant(4, None), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("mode", sorted(QUANT_MODES))
def test_graph_requantization_recovers_the_codes(mode, dtype):
    """tp.Linear re-quantizes the loaded weight in the model dtype; it must get our codes back,
    including the extreme codes (+-127, -8/7) of every row or block."""
    bits, block = QUANT_MODES[mode]
    weight = torch.randn(48, 64) * 0.02
    q = rtn_quantize(weight, bits, block)
    plan = linear_quant("layer", q, (48, 64))
    loaded, scale = quantized_weight_tensors("layer", q, plan, dtype)
    assert loaded.dtype == dtype and scale.dtype == dtype
    codes = torch.round(loaded.double() / expand_scale(scale.double(), (48, 64), plan.weight_quant_dim))
    assert torch.equal(codes, q.codes.double())


@pytest.mark.parametrize("bad, message", [
    (lambda q: replace(q, bits=4), "per-channel scales with 4-bit"),
    (lambda q: replace(q, bits=3), "3-bit codes"),
    (lambda q: replace(q, scales=q.scales[:-1]), r"expected \(24,\)"),
    (lambda q: replace(q, codes=q.codes.t()), "codes have shape"),
    (lambda q: replace(q, scales=q.scales.view(1, 1, -1)), "1-D .* or 2-D"),
])
def test_bad_per_channel_weights_are_rejected(bad, message):
    q = rtn_quantize(torch.randn(24, 32), 8)
    with pytest.raises(ValueError, match=message):
        linear_quant("layer", bad(q), (24, 32))


@pytest.mark.parametrize("bad, message", [
    (lambda q: replace(q, bits=8), "block-wise scales with 8-bit"),
    (lambda q: replace(q, block_size=5), "must be >= 2 and divide"),
    (lambda q: replace(q, block_size=1), "must be >= 2 and divide"),
    (lambda q: replace(q, scales=q.scales.reshape(-1, 32)), r"expected \(24, 4\)"),
    (lambda q: replace(q, scales=q.scales.t()), r"expected \(24, 4\)"),
])
def test_bad_block_weights_are_rejected(bad, message):
    q = rtn_quantize(torch.randn(24, 32), 4, 8)
    with pytest.raises(ValueError, match=message):
        linear_quant("layer", bad(q), (24, 32))


def test_scales_that_vanish_in_float16_are_rejected():
    q = rtn_quantize(torch.randn(24, 32), 8)
    q.scales[3] = 1e-9  # underflows to 0 in float16; TensorRT needs scales > 0
    plan = linear_quant("layer", q, (24, 32))
    with pytest.raises(ValueError, match="finite and > 0"):
        quantized_weight_tensors("layer", q, plan, torch.float16)


def test_quantized_weights_for_unknown_layers_are_rejected():
    model, _ = case(TINY)
    with pytest.raises(ValueError, match="unknown linear layers"):
        tripy_state_dict(model, torch.float32, {"transformer.h.9.mlp.c_fc": rtn_quantize(torch.randn(4, 4), 8)})


# --- compile bounds ------------------------------------------------------------------------

def test_shape_bounds_from_the_case():
    bounds = shape_bounds(TINY, batch=3, seq_len=5, max_batch=64)
    assert bounds.batch == (1, 3, 64) and bounds.seq == (1, 5, TINY.block_size)
    assert bounds.admits(64, TINY.block_size) and bounds.admits(1, 1)
    assert not bounds.admits(65, 1) and not bounds.admits(1, TINY.block_size + 1)
    with pytest.raises(ValueError, match="batch 65"):
        shape_bounds(TINY, 65, 1, max_batch=64)
    with pytest.raises(ValueError, match="sequence length 17"):
        shape_bounds(TINY, 1, 17)


def test_engine_batch_bound_shrinks_for_large_models():
    assert tripy_layout.engine_max_batch(TINY, torch.float16, 3) == tripy_layout.MAX_BATCH
    gpt2 = GPTConfig(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768)
    assert tripy_layout.engine_max_batch(gpt2, torch.float16, 2) == 41  # 4 GiB / (1024 * 50257 * 2 B)
    assert tripy_layout.engine_max_batch(gpt2, torch.float32, 2) == 20
    assert tripy_layout.engine_max_batch(gpt2, torch.float32, 30) == 30  # never below the compiling batch


# --- targets, gating -----------------------------------------------------------------------

def test_modes_are_separate_gpu_targets():
    assert [(m.name, m.precision, m.dtype, m.bits) for m in MODES] == [
        ("tripy-fp32", "fp32-reassoc", "float32", None),
        ("tripy-fp16", "fp16", "float16", None),
        ("tripy-int8-wo", "int8-wo", "float16", 8),
        ("tripy-int4-wo", "int4-wo", "float16", 4),
    ]
    for target in tripy.TARGETS:
        assert target.marker == "gpu" and target.requirements.device == "cuda"
        assert target.capabilities.dynamic_shapes and not target.capabilities.returns_loss
    assert tripy.TRIPY_FP32.requirements.min_cuda_capability == (7, 5)
    assert tripy.TRIPY_INT4_WO.requirements.min_cuda_capability == (8, 0)


def test_quantized_weights_are_computed_once_per_model():
    calls = []

    def quantizer(model, mode):
        calls.append(mode.name)
        return quantize_model(model, 4, 8)

    target = tripy.TripyTarget(tripy_layout.MODES[3], quantizer=quantizer)
    model, _ = case(TINY)
    first = target.quantized_weights(model)
    assert target.quantized_weights(model) is first and calls == ["tripy-int4-wo"]
    assert tripy.TripyTarget(tripy_layout.MODES[1], quantizer=quantizer).quantized_weights(model) == {}
    assert calls == ["tripy-int4-wo"]


def test_targets_are_registered_as_entry_points():
    names = {ep.name for ep in metadata.entry_points(group="gpt_conformance.targets")}
    assert {"tripy-fp32", "tripy-fp16", "tripy-int8-wo", "tripy-int4-wo"} <= names


@pytest.mark.slow  # a fresh interpreter importing torch: 3-10 s on a busy 2-core laptop
def test_import_and_probe_leave_nvtripy_and_cuda_alone():
    """In a fresh interpreter: importing and probing every Tripy target neither loads the nvtripy
    graph module nor initialises CUDA (the probe imports nvtripy itself, which creates no context)."""
    script = (
        "import sys, torch\n"
        "from targets import tripy\n"
        "assert 'nvtripy' not in sys.modules and 'gpt_conformance.targets.tripy_gpt' not in sys.modules\n"
        "[t.probe() for t in tripy.TARGETS]\n"
        "assert 'gpt_conformance.targets.tripy_gpt' not in sys.modules, 'probing imported the graph module'\n"
        "assert not torch.cuda.is_initialized(), 'probing initialised CUDA'\n"
    )
    root = Path(tripy.__file__).parent.parent
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=120)


def test_probe_lists_every_failed_check(monkeypatch):
    monkeypatch.setattr(tripy, "probe_nvtripy", lambda: Availability(False, "import nvtripy failed: X"))
    monkeypatch.setattr(tripy, "probe_cuda", lambda cap: Availability(False, f"no CUDA device (needs {cap})"))
    assert tripy.TRIPY_INT8_WO.probe().reason == "import nvtripy failed: X; no CUDA device (needs (8, 0))"


def test_probe_names_only_what_failed(monkeypatch):
    monkeypatch.setattr(tripy, "probe_nvtripy", lambda: AVAILABLE)
    monkeypatch.setattr(tripy, "probe_cuda", lambda cap: Availability(False, f"needs {cap}") if cap > (7, 5) else AVAILABLE)
    assert tripy.TRIPY_FP16.probe()
    assert tripy.TRIPY_INT4_WO.probe().reason == "needs (8, 0)"


def test_real_probe_without_nvtripy_runtime_skips_with_reason():
    reason = tripy.TRIPY_FP32.probe().reason
    if importlib.util.find_spec("tensorrt") is None:
        assert "import nvtripy failed" in reason and "NVIDIA's own package index" in reason
    if not torch.cuda.is_available():
        assert "no CUDA device" in reason
