"""Checkpoints: safetensors for tensors plus a JSON config, and a local Hugging Face GPT-2 loader.

Nothing here unpickles a file or touches the network: safetensors holds only tensors, and
``from_pretrained`` reads a directory the user already has.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from gpt_conformance.reference.families import family_named, family_of
from gpt_conformance.reference.model import GPT, GPTConfig
from safetensors.torch import load_file, save_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Where a local Hugging Face GPT-2 directory is named when no option names it (pytest and the CLI).
GPT2_DIR_ENV = "GPT_CONFORMANCE_GPT2_DIR"

# Hugging Face GPT-2 uses Conv1D, which stores these weights as [in, out]; nn.Linear wants [out, in].
HF_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model it claims to describe."""


def save_checkpoint(model: nn.Module, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (the model's family and config, plus
    ``extra`` metadata) to ``directory``; a model of any family in ``reference.families``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    family = family_of(model.config)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    # Tied weights are one tensor; safetensors refuses shared storage, so store the head once.
    for key in family.tied_weights:
        state.pop(key, None)
    save_file(state, str(directory / WEIGHTS_NAME))
    meta = {"model_config": model.config.to_dict(), **(extra or {})}
    if family.name != "nanogpt":  # a checkpoint without "family" is nanoGPT's (as every older one is)
        meta["family"] = family.name
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load_checkpoint(directory: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Load a checkpoint written by :func:`save_checkpoint`, as a model of its family."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        meta = json.loads(config_path.read_text())
        family = family_named(meta.get("family", "nanogpt"))
        config = family.config_from_dict(meta["model_config"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path} is not a gpt-conformance config: {exc}") from exc
    model = family.model_type(config)
    load_state_dict_strict(model, load_file(str(weights_path)), source=str(weights_path))
    return model.to(dtype).eval()


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, naming every missing, unexpected or mis-shaped tensor."""
    expected = {k: v for k, v in model.state_dict().items()}
    # A tied weight may be stored under either name (nanoGPT stores both, we store one).
    for key, shared in family_of(model.config).tied_weights.items():
        if key not in state and shared in state:
            state = {**state, key: state[shared]}
        if shared not in state and key in state:
            state = {**state, shared: state[key]}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if unexpected:
        problems.append(f"unexpected {unexpected}")
    if shapes:
        problems.append(f"shape mismatch {shapes}")
    if problems:
        raise CheckpointError(f"checkpoint {source} does not match {model.config}: " + "; ".join(problems))
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(state[k])


def from_pretrained(path: str | Path, dtype: torch.dtype = torch.float32, **overrides) -> GPT:
    """Load a *local* Hugging Face GPT-2 directory (config.json + model.safetensors or
    pytorch_model.bin is refused: we never unpickle). Never downloads.

    Hugging Face GPT-2 uses tanh GELU, so the returned config says ``gelu="tanh"`` unless
    overridden; ``overrides`` replace GPTConfig fields (for example ``dropout``).
    """
    path = Path(path)
    config_path, weights_path = path / "config.json", path / "model.safetensors"
    if not config_path.is_file():
        raise CheckpointError(f"{path} is not a Hugging Face model directory: no config.json")
    if not weights_path.is_file():
        raise CheckpointError(
            f"{path} has no model.safetensors; pickled pytorch_model.bin files are not loaded "
            "(re-save the model with save_pretrained(safe_serialization=True))"
        )
    hf = json.loads(config_path.read_text())
    if hf.get("model_type") != "gpt2":
        raise CheckpointError(f"{config_path} describes model_type {hf.get('model_type')!r}, expected 'gpt2'")
    activation = hf.get("activation_function", "gelu_new")
    gelu = "erf" if activation == "gelu" else "tanh"
    config = GPTConfig(
        block_size=hf["n_positions"],
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        bias=True,
        gelu=gelu,
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        **overrides,
    )
    raw = load_file(str(weights_path))
    state = {}
    for key, tensor in raw.items():
        name = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # HF's causal-mask buffers, not parameters
        if name.endswith(HF_CONV1D_SUFFIXES):
            tensor = tensor.t()
        state[name] = tensor
    model = GPT(config)
    load_state_dict_strict(model, state, source=str(weights_path))
    return model.to(dtype).eval()
