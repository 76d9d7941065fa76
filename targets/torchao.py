"""``torchao-int8-wo``: torchao's int8 weight-only quantization of the reference GPT, on CPU
(pip extra ``torchao``, in the test install).

``quantize_(model, Int8WeightOnlyConfig())`` turns every quantizable linear's weight into a
torchao ``Int8Tensor``: int8 codes (``qdata``), one float32 scale per output channel (``scale``)
and a zero point that must be 0 (symmetric). torchao computes each linear with its own weight-only
path, not with dequantized weights: one matmul against the int8 codes, then each output channel
multiplied by its scale, then the bias (torchao 0.18, ``Int8Tensor``'s ``aten.linear``). Its
calibration is its own too (scale = amax / 127.5, not modelopt's amax / 127), which is why the
arithmetic reference is built from the codes and scales that torchao itself reports
(``quantized_weights``), never from the harness's own quantization.

int4 is not offered: see docs/targets.md ("torchao int4").
"""

from __future__ import annotations

import copy
from functools import cache
from importlib import metadata

import torch
from gpt_conformance.harness.api import (
    ALL_FAMILIES,
    AVAILABLE,
    Availability,
    Capabilities,
    Requirements,
    Target,
    UnsupportedHere,
)
from gpt_conformance.harness.core.quant import (
    LowPrecision,
    QuantizedLinear,
    ScaleLayoutError,
    WeightQuantization,
    quantizable_linears,
)
from gpt_conformance.targets.modelopt import QuantizedRunnable


def reported_int8_weights(model: torch.nn.Module, names: set[str]) -> dict[str, QuantizedLinear]:
    """The codes and scales of each torchao-quantized linear in ``names``, as torchao reports them;
    the layout is checked, not assumed (per output channel, symmetric)."""
    result = {}
    for name, module in model.named_modules():
        if name not in names:
            continue
        weight = module.weight
        qdata, scale = getattr(weight, "qdata", None), getattr(weight, "scale", None)
        if qdata is None or scale is None:
            raise ScaleLayoutError(f"layer {name!r}: torchao left a {type(weight).__name__} weight, not an Int8Tensor")
        out, inp = qdata.shape
        if list(getattr(weight, "block_size", [1, inp])) != [1, inp] or scale.numel() != out:
            raise ScaleLayoutError(f"layer {name!r}: torchao's block_size {getattr(weight, 'block_size', None)} and "
                                   f"scale {tuple(scale.shape)} are not one scale per output channel")
        zero_point = getattr(weight, "zero_point", None)
        if zero_point is not None and bool(zero_point.ne(0).any()):
            raise ScaleLayoutError(f"layer {name!r}: torchao's zero point is not 0 (asymmetric quantization)")
        result[name] = QuantizedLinear(qdata.detach().contiguous(), scale.detach().reshape(out).float().contiguous(),
                                       None, 8, name)
    return result


@cache
def probe_int8_weight_only() -> Availability:
    """Whether this torchao quantizes a linear into an ``Int8Tensor`` with this torch: torchao
    imports on a torch it was not built for, and fails later, when it quantizes."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        probe = torch.nn.Sequential(torch.nn.Linear(8, 4))
        quantize_(probe, Int8WeightOnlyConfig())
        reported_int8_weights(probe, {"0"})
        probe(torch.ones(1, 8))
    except Exception as exc:  # noqa: BLE001  (any failure here is the reason to skip, said precisely)
        return Availability(False, f"torchao {_version()} cannot quantize int8 weight-only with torch "
                                   f"{torch.__version__}: {type(exc).__name__}: {exc}")
    return AVAILABLE


def _version() -> str | None:
    try:
        return metadata.version("torchao")
    except metadata.PackageNotFoundError:
        return None


class TorchaoInt8WeightOnly(Target):
    name = "torchao-int8-wo"
    precision = "int8-wo"
    requirements = Requirements(packages=(("torchao.quantization", "torchao"),), device="cpu")
    capabilities = Capabilities(dynamic_shapes=True, families=ALL_FAMILIES)
    low_precision = LowPrecision(torch.float32, weights=WeightQuantization(8))
    description = "torchao Int8WeightOnlyConfig (int8 codes, per-output-channel scales after the matmul), fp32, CPU"

    def probe(self) -> Availability:
        found = super().probe()
        return found if not found.available else probe_int8_weight_only()

    def prepare(self, model, config):
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        names = set(quantizable_linears(model))
        widths = {model.get_submodule(name).in_features for name in names}
        if 1 in widths:
            # torchao 0.18's choose_qparams_affine reshapes one scale into [out_features, 1] and
            # raises "shape '[3, 1]' is invalid for input of size 1" (found by the property search
            # on n_embd=1); its per-channel path needs in_features >= 2.
            raise UnsupportedHere("torchao 0.18 cannot quantize a linear with in_features 1 (n_embd=1): "
                                  "its choose_qparams_affine fails on a one-column weight")
        quantized = copy.deepcopy(model).eval()
        quantize_(quantized, Int8WeightOnlyConfig(), filter_fn=lambda module, fqn: fqn in names)
        return QuantizedRunnable(quantized, reported_int8_weights(quantized, names))

    def environment(self):
        return {"torchao": _version(), "bits": 8, "block_size": None}


TARGETS = [TorchaoInt8WeightOnly()]
