"""``modelopt-int8-wo`` and ``modelopt-int4-wo``: NVIDIA Model Optimizer's weight-only fake
quantization of the reference GPT, on CPU (pip extra ``quant``: ``nvidia-modelopt``).

- int8: ``mtq.INT8_WEIGHT_ONLY_CFG``, one scale per output channel (what Tripy's nanoGPT uses
  with ``weight_quant_dim=0``);
- int4: ``mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG``, one scale per block along in_features. The
  preset's block of 128 is wider than the tiny models' 64 features, so the block size is a
  constructor argument (default ``DEFAULT_INT4_BLOCK_SIZE`` = 32; register ``ModeloptWeightOnly(4, block_size=16)`` for
  another).

Weight-only max calibration does not depend on the data, but modelopt still wants a forward
loop: it runs on seeded random tokens from the model's own vocabulary (never a dataset hub).
The runnable computes with modelopt's own fake-quantized weights (each layer's weight quantizer
applied once) and exposes the calibrated scales as ``quantized_weights`` (``gpt_conformance.harness.core.quant``
layout), so the arithmetic check builds its fake-quant reference from exactly these tensors.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import sys
import warnings

import torch
from gpt_conformance.harness.api import ALL_FAMILIES, Capabilities, Requirements, Target, UnsupportedHere
from gpt_conformance.harness.core.quant import (
    DEFAULT_INT4_BLOCK_SIZE,
    MAXBOUND,
    LowPrecision,
    QuantizedLinear,
    ScaleLayoutError,
    WeightQuantization,
    fake_quant_model,
    symmetric_codes,
)
from gpt_conformance.reference.families import family_of

CALIBRATION_SEED = 1234
CALIBRATION_BATCHES = 2


@contextlib.contextmanager
def quiet_modelopt_import():
    """Import modelopt inside this without its warning that the installed transformers "is not
    tested with current version of modelopt" (modelopt/torch/__init__.py, 0.47: transformers below
    4.57 or from 5.15 on). The warning is about modelopt's Hugging Face integrations; these targets
    quantize the reference GPT, a plain nn.Module, and use none of them, so in every run it only
    hides the warnings that matter. Only this message, as modelopt issues it on import, is
    filtered; every other warning passes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"transformers \S+ is not tested with current version of modelopt",
                                category=UserWarning, module=r"modelopt\.torch$")
        yield


# What mtq.quantize prints on every call ("Inserted 33 quantizers"): captured, not shown; any
# other line it prints is passed through.
QUANTIZE_SUMMARY = re.compile(r"Inserted \d+ quantizers")


def pass_through_unexpected(captured: str) -> None:
    """Print the lines of modelopt's captured stdout other than its quantizer count."""
    lines = [line for line in captured.splitlines() if line.strip() and not QUANTIZE_SUMMARY.fullmatch(line.strip())]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


def quantized_weights_from_modelopt(model: torch.nn.Module) -> dict[str, QuantizedLinear]:
    """Read the calibrated weight quantizers of a modelopt-quantized model into plain tensors.

    Codes are recomputed from the layer's float weight with the quantizer's own amax, exactly
    as modelopt's fake quantizer does. The amax layout is checked, not assumed: per channel it
    must hold ``out`` values, block-wise ``out * in / B`` values in modelopt's row-major order.
    """
    result = {}
    for name, module in model.named_modules():
        quantizer = getattr(module, "weight_quantizer", None)
        if quantizer is None or not getattr(quantizer, "is_enabled", False):
            continue
        weight = module.weight.detach().to(torch.float32)
        out, inp = weight.shape
        bits = quantizer.num_bits
        if bits not in MAXBOUND:
            raise ScaleLayoutError(f"layer {name!r}: unsupported num_bits {bits!r}")
        block_sizes = quantizer.block_sizes or {}
        block_size = block_sizes.get(-1) or block_sizes.get(1)
        amax = quantizer.amax
        if amax is None:
            raise ScaleLayoutError(f"layer {name!r}: weight quantizer has no amax; was the model calibrated?")
        amax = amax.detach().to(torch.float32)
        expected = out if block_size is None else out * inp // block_size
        if amax.numel() != expected:
            raise ScaleLayoutError(f"layer {name!r}: modelopt amax has {amax.numel()} values (shape {tuple(amax.shape)}), "
                                   f"expected {expected} for weight {tuple(weight.shape)}, block_size {block_size}")
        amax = amax.reshape(out, 1, 1) if block_size is None else amax.reshape(out, inp // block_size, 1)
        groups = weight.view(out, 1, inp) if block_size is None else weight.view(out, inp // block_size, block_size)
        codes, scales = symmetric_codes(groups, amax, bits)
        codes = codes.view(out, inp)
        scales = scales.reshape(out) if block_size is None else scales.reshape(out, inp // block_size)
        result[name] = QuantizedLinear(codes, scales.contiguous(), block_size, bits, name)
    if not result:
        raise ScaleLayoutError("no enabled weight quantizer found: is this a modelopt-quantized model?")
    return result


def weight_only_config(mtq, spec: WeightQuantization) -> dict:
    """The modelopt preset for ``spec``, with its block size replaced (list or dict form: the
    config format changed from a dict of patterns to a list of entries in modelopt 0.4x)."""
    preset = mtq.INT8_WEIGHT_ONLY_CFG if spec.bits == 8 else mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG
    config = copy.deepcopy(preset)
    if spec.block_size is None:
        return config
    entries = config["quant_cfg"]
    if isinstance(entries, dict):
        found = [entries["*weight_quantizer"]] if "*weight_quantizer" in entries else []
    else:
        found = [e["cfg"] for e in entries if e.get("quantizer_name") == "*weight_quantizer" and "cfg" in e]
    if not found:
        raise RuntimeError("modelopt's INT4_BLOCKWISE_WEIGHT_ONLY_CFG has no '*weight_quantizer' entry to set the block size on")
    for cfg in found:
        cfg["block_sizes"] = {**cfg.get("block_sizes", {}), -1: spec.block_size}
    return config


def calibration_batches(config) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    shape = (4, family_of(config).block_size(config))
    return [torch.randint(0, config.vocab_size, shape, generator=generator) for _ in range(CALIBRATION_BATCHES)]


class QuantizedRunnable:
    """A runnable that also says which quantized tensors it computes with."""

    def __init__(self, model, quantized_weights):
        self.model = model
        self.family = family_of(model.config)
        self.quantized_weights = quantized_weights

    def __call__(self, idx, targets=None):
        return self.family.logits_and_loss(self.model, idx, targets)


class ModeloptWeightOnly(Target):
    requirements = Requirements(packages=(("modelopt.torch.quantization", "quant"),), device="cpu")
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)

    def __init__(self, bits: int, block_size: int | None = None, name: str | None = None):
        spec = WeightQuantization(bits, block_size)
        self.name = name or f"modelopt-int{bits}-wo"
        self.precision = f"int{bits}-wo"
        self.spec = spec
        self.low_precision = LowPrecision(torch.float32, weights=spec)
        self.description = f"modelopt fake quantization, {spec.describe()}, fp32 compute, CPU"

    def probe(self):
        with quiet_modelopt_import():  # the probe is where a run first imports modelopt
            return super().probe()

    def prepare(self, model, config):
        with quiet_modelopt_import():
            import modelopt.torch.quantization as mtq

        if self.spec.block_size is not None:
            for name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and module.in_features % self.spec.block_size:
                    raise UnsupportedHere(f"layer {name} has in_features {module.in_features}, not a multiple of "
                                          f"block_size {self.spec.block_size}")
        quantized = copy.deepcopy(model).eval()
        batches = calibration_batches(config)

        def forward_loop(m):
            for batch in batches:
                m(batch)

        captured = io.StringIO()
        with torch.no_grad():
            with contextlib.redirect_stdout(captured):
                mtq.quantize(quantized, weight_only_config(mtq, self.spec), forward_loop=forward_loop)
            pass_through_unexpected(captured.getvalue())
            weights = {name: module.weight_quantizer(module.weight).detach()
                       for name, module in quantized.named_modules()
                       if getattr(getattr(module, "weight_quantizer", None), "is_enabled", False)}
        # modelopt re-quantizes every weight on every call (~30 ms per linear on CPU), so the
        # runnable holds modelopt's own fake-quantized weights in a plain copy of the model.
        return QuantizedRunnable(fake_quant_model(model, weights), quantized_weights_from_modelopt(quantized))

    def environment(self):
        from importlib import metadata

        try:
            version = metadata.version("nvidia-modelopt")
        except metadata.PackageNotFoundError:
            version = None
        return {"modelopt": version, "bits": self.spec.bits,
                "block_size": self.spec.block_size, "calibration": f"{CALIBRATION_BATCHES} batches of seeded random tokens"}


TARGETS = [ModeloptWeightOnly(8), ModeloptWeightOnly(4, block_size=DEFAULT_INT4_BLOCK_SIZE)]
