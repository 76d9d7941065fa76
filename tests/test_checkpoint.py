"""Checkpoints: our safetensors+JSON format and the local Hugging Face GPT-2 loader."""

import json

import pytest
import torch
import transformers
from gpt_conformance.reference.checkpoint import CheckpointError, from_pretrained, load_checkpoint, save_checkpoint
from gpt_conformance.reference.model import GPT, GPTConfig

CONFIG = GPTConfig(block_size=24, vocab_size=53, n_layer=2, n_head=2, n_embd=16)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(CONFIG).eval()
    save_checkpoint(model, tmp_path, extra={"note": "unit test"})
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == CONFIG
    idx = torch.randint(0, 53, (2, 10))
    torch.testing.assert_close(loaded(idx, full_logits=True)[0], model(idx, full_logits=True)[0], rtol=0, atol=0)
    assert json.loads((tmp_path / "config.json").read_text())["note"] == "unit test"


def test_checkpoint_that_does_not_match_its_config_names_the_tensors(tmp_path):
    save_checkpoint(GPT(CONFIG), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model_config"]["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*transformer\.wpe\.weight"):
        load_checkpoint(tmp_path)


def test_missing_checkpoint_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file missing: .*config.json"):
        load_checkpoint(tmp_path)


def save_tiny_hf_gpt2(path, activation="gelu_new"):
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=53, n_positions=24, n_embd=16, n_layer=2, n_head=2,
                                        activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0,
                                        attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    hf.save_pretrained(path, safe_serialization=True)
    return hf


@pytest.mark.parametrize("activation, gelu", [("gelu_new", "tanh"), ("gelu", "erf")])
def test_from_pretrained_matches_transformers(tmp_path, activation, gelu):
    hf = save_tiny_hf_gpt2(tmp_path, activation)
    model = from_pretrained(tmp_path)
    assert model.config.gelu == gelu
    idx = torch.randint(0, 53, (3, 24))
    with torch.no_grad():
        expected = hf(idx).logits
        ours, _ = model(idx, full_logits=True)
    # Same math in a different op order (Conv1D addmm vs Linear): fp32 reassociation only,
    # measured max |diff| ~1e-7 on these 0.1-scale logits; assert_close's fp32 defaults bound it.
    torch.testing.assert_close(ours, expected, rtol=1.3e-6, atol=1e-5)


def test_from_pretrained_refuses_pickles_and_other_models(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickled pytorch_model.bin files are not loaded"):
        from_pretrained(tmp_path)
    save_tiny_hf_gpt2(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model_type 'llama'"):
        from_pretrained(tmp_path)
