"""``hf-gpt2``: Hugging Face ``transformers.GPT2LMHeadModel`` with the reference's weights mapped in.

An independent implementation of the same architecture, so a pass cross-checks the reference
itself, not only a backend. The weight mapping is the exact inverse of
``gpt_conformance.reference.checkpoint.from_pretrained``: the ``transformer.`` names are shared, and the four
Conv1D weights (stored ``[in, out]`` by Hugging Face) are the transposes of the reference's
``nn.Linear`` weights. ``tests/test_hf_gpt2.py`` checks that round trip bit for bit.

How the two architectures are made to agree, all stated in each record's ``target_environment``:

- GELU: nanoGPT (and the reference's default) uses exact erf GELU, Hugging Face GPT-2 checkpoints
  use the tanh approximation (``gelu_new``). ``GPT2Config.activation_function`` selects either, so
  the Hugging Face model is configured to the reference's ``gelu`` (``"gelu"`` for erf,
  ``"gelu_new"`` for tanh) and the reference is never reconfigured.
- ``bias=False`` configs: GPT-2 always has biases; they are set to exact zeros, which adds nothing.
- Attention: Hugging Face's ``eager`` implementation (explicit masked softmax), so it does not
  share the reference's ``scaled_dot_product_attention`` kernel.
- Loss: Hugging Face's ``labels=`` shifts the labels by one position; the reference's ``targets``
  are already aligned, so the loss is the reference's formula on the Hugging Face logits.
"""

from __future__ import annotations

import torch
from gpt_conformance.harness.api import Capabilities, Requirements, Target
from gpt_conformance.reference.checkpoint import HF_CONV1D_SUFFIXES
from gpt_conformance.reference.model import GPT, GPTConfig
from torch.nn import functional as F

# The reference's gelu field -> GPT2Config.activation_function computing the same function.
HF_ACTIVATION = {"erf": "gelu", "tanh": "gelu_new"}


def hf_config(config: GPTConfig):
    """The ``GPT2Config`` of the same architecture as ``config``, dropout off."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function=HF_ACTIVATION[config.gelu],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=config.layer_norm_eps,
        scale_attn_weights=True,
        tie_word_embeddings=True,
        use_cache=False,
        # GPT-2's token ids (50256) fall outside small vocabularies; generation is not used here.
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The reference's weights under Hugging Face GPT-2's names and layouts: the inverse of
    ``from_pretrained`` (Conv1D weights transposed; absent biases as zeros for bias=False)."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        state[name] = tensor.t().contiguous() if name.endswith(HF_CONV1D_SUFFIXES) else tensor.clone()
    if not model.config.bias:
        for name, tensor in list(state.items()):
            if name.endswith(".weight") and (".ln_" in name or name.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight"))):
                width = tensor.shape[-1] if name.endswith(HF_CONV1D_SUFFIXES) else tensor.shape[0]
                state[name.removesuffix(".weight") + ".bias"] = torch.zeros(width, dtype=tensor.dtype)
    return state


def to_hf_model(model: GPT):
    """A ``GPT2LMHeadModel`` (eval mode, the reference's dtype) computing what ``model`` computes."""
    from transformers import GPT2LMHeadModel

    dtype = next(model.parameters()).dtype
    hf = GPT2LMHeadModel(hf_config(model.config)).to(dtype).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # HF GPT-2 may keep causal-mask buffers (".attn.bias", ".attn.masked_bias") outside the state dict.
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping to GPT2LMHeadModel is incomplete: missing {missing}, unexpected {unexpected}")
    return hf


class HuggingFaceGPT2Target(Target):
    name = "hf-gpt2"
    precision = "fp32"
    description = "transformers.GPT2LMHeadModel (eager attention) with the reference's weights mapped in"
    requirements = Requirements(packages=(("transformers", None),))
    capabilities = Capabilities(dynamic_shapes=True)

    def environment(self) -> dict:
        import transformers

        # Static on purpose: the record's own config says which gelu this case used, and this
        # table says which activation_function computed it. The reference is never changed.
        return {"transformers": transformers.__version__, "attn_implementation": "eager",
                "activation_function_for_reference_gelu": dict(HF_ACTIVATION),
                "reference_reconfigured": False,
                "bias_false": "GPT-2's biases set to exact zeros",
                "loss": "reference formula (targets unshifted) on the HF logits, fp32"}

    def prepare(self, model, config):
        hf = to_hf_model(model)

        def run(idx, targets=None):
            logits = hf(input_ids=idx).logits
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return logits, loss

        return run


TARGETS = [HuggingFaceGPT2Target()]
