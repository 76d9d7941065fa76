"""Golden data for the named cases: the fp64 truth and what eager fp32 gives.

Each case has ``goldens/<name>.safetensors`` (tensors) and ``goldens/<name>.json`` (config, seed,
shapes, torch version, and the sha256 of the tensor file). A tensor file whose hash differs from
its metadata is reported as corrupt: it is never used and never silently regenerated.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from gpt_conformance.reference.cases import CaseSpec, build_case
from gpt_conformance.reference.families import family_named, family_of
from safetensors.torch import load_file, save_file

GOLDEN_DIR = Path(__file__).parent / "goldens"
FORMAT_VERSION = 1
# Cases that do not store all logits keep this many leading vocabulary columns of the fp64
# logits as a fingerprint, enough to detect a changed reference without storing ~100 MB.
FINGERPRINT_COLUMNS = 128


class GoldenError(RuntimeError):
    """A golden file that is missing, corrupt or does not match its case."""


@dataclass
class Golden:
    spec: CaseSpec
    model: torch.nn.Module  # fp32, eval mode, of the case's family
    idx: torch.Tensor
    targets: torch.Tensor
    logits64: torch.Tensor
    loss64: torch.Tensor
    logits32: torch.Tensor
    loss32: torch.Tensor
    sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor | None):
    """(logits64, loss64, logits32, loss32) of ``model`` (fp32, any family) on ``idx``: the truth
    and eager fp32."""
    family = family_of(model.config)
    model64 = copy.deepcopy(model).double()
    logits64, loss64 = family.logits_and_loss(model64, idx, targets)
    logits32, loss32 = family.logits_and_loss(model, idx, targets)
    return logits64, loss64, logits32, loss32


def golden_paths(spec: CaseSpec, directory: Path = GOLDEN_DIR) -> tuple[Path, Path]:
    return directory / f"{spec.name}.safetensors", directory / f"{spec.name}.json"


def write_golden(spec: CaseSpec, directory: Path = GOLDEN_DIR) -> Path:
    model, idx, targets = build_case(spec)
    logits64, loss64, logits32, loss32 = reference_outputs(model, idx, targets)
    tensors = {"idx": idx, "targets": targets, "loss64": loss64, "loss32": loss32}
    if spec.store_full:
        tensors.update(logits64=logits64, logits32=logits32)
        state = model.state_dict()
        for tied in family_named(spec.family).tied_weights:
            state.pop(tied)  # stored once, under the name it is tied to
        tensors.update({f"weight.{k}": v for k, v in state.items()})
    else:
        tensors["fingerprint64"] = logits64[..., :FINGERPRINT_COLUMNS]
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path, meta_path = golden_paths(spec, directory)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tensor_path))
    meta = {
        "format_version": FORMAT_VERSION,
        "case": spec.name,
        "family": spec.family,
        "config": spec.config.to_dict(),
        "seed": spec.seed,
        "batch": spec.batch,
        "seq_len": spec.seq_len,
        "store_full": spec.store_full,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "loss64": float(loss64),
        "loss32": float(loss32),
        "sha256": sha256_file(tensor_path),
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return tensor_path


def load_golden(spec: CaseSpec, directory: Path = GOLDEN_DIR) -> Golden:
    """Load and verify the golden of ``spec``; raise GoldenError naming what is wrong."""
    tensor_path, meta_path = golden_paths(spec, directory)
    if not tensor_path.is_file() or not meta_path.is_file():
        raise GoldenError(f"golden for case {spec.name!r} is missing ({tensor_path}); run pytest --update-goldens")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise GoldenError(f"golden metadata {meta_path} is corrupt: {exc}") from exc
    actual = sha256_file(tensor_path)
    if meta.get("sha256") != actual:
        raise GoldenError(
            f"golden {tensor_path} is corrupt: sha256 {actual[:12]}… does not match "
            f"{str(meta.get('sha256'))[:12]}… recorded in {meta_path.name}"
        )
    expected_meta = {"config": spec.config.to_dict(), "seed": spec.seed, "batch": spec.batch, "seq_len": spec.seq_len,
                     "family": spec.family}
    recorded = {"family": "nanogpt", **meta}  # goldens from before model families are nanoGPT's
    stale = {k: (recorded.get(k), v) for k, v in expected_meta.items() if recorded.get(k) != v}
    if stale:
        raise GoldenError(f"golden {meta_path} was made for a different case definition: {stale}; "
                          "run pytest --update-goldens if the case changed on purpose")
    tensors = load_file(str(tensor_path))
    model, idx, targets = build_case(spec)
    if not torch.equal(idx, tensors["idx"]) or not torch.equal(targets, tensors["targets"]):
        raise GoldenError(f"case {spec.name!r}: seeded inputs no longer match the golden's (torch RNG changed?)")
    if spec.store_full:
        state = {k.removeprefix("weight."): v for k, v in tensors.items() if k.startswith("weight.")}
        for tied, source in family_named(spec.family).tied_weights.items():
            state[tied] = state[source]
        model.load_state_dict(state)
        logits64, logits32 = tensors["logits64"], tensors["logits32"]
    else:
        logits64, _, logits32, _ = reference_outputs(model, idx, targets)
        check_fingerprint(spec, logits64, tensors["fingerprint64"])
    return Golden(spec, model, idx, targets, logits64, tensors["loss64"], logits32, tensors["loss32"], actual)


def check_fingerprint(spec: CaseSpec, logits64: torch.Tensor, fingerprint: torch.Tensor) -> None:
    """Recomputed fp64 logits must reproduce the stored fingerprint. fp64 on another machine
    differs only by reassociation, ~1e-15 relative; 1e-9 of the logit scale leaves six orders
    of margin and still catches any change to the model's math (>= 1e-4 in practice)."""
    part = logits64[..., :FINGERPRINT_COLUMNS]
    scale = float(fingerprint.abs().max()) or 1.0
    diff = float((part - fingerprint).abs().max())
    if diff > 1e-9 * scale:
        raise GoldenError(f"case {spec.name!r}: reference fp64 logits moved by {diff:.3g} "
                          f"(scale {scale:.3g}) from the golden fingerprint; the reference changed")
