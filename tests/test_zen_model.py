"""The shipped tiny models (nanoGPT's and its nanochat-family twin): their corpus, their training
loop, and the text they generate."""

import json
import math
from dataclasses import replace

import pytest
import torch
from gpt_conformance.harness.checks.decode import reference_greedy
from gpt_conformance.reference.families import family_of
from gpt_conformance.reference.tokenizers import CharTokenizer
from gpt_conformance.reference.train import (
    ZEN_CONFIGS,
    ZEN_DIRS,
    TrainConfig,
    learning_rate_at,
    load_zen_model,
    main,
    train,
    zen_of_python,
)

# Lines of PEP 20, split after the prompt. The model must continue each prompt with the rest of
# its line; these strings are the poem, not anything the model produced.
ZEN_LINES = [
    ("Beautiful is", " better than ugly."),
    ("Explicit is", " better than implicit."),
    ("Simple is", " better than complex."),
    ("Complex is", " better than complicated."),
    ("Flat is", " better than nested."),
    ("Sparse is", " better than dense."),
    ("Readability", " counts."),
    ("Errors should", " never pass silently."),
    ("In the face of", " ambiguity, refuse the temptation to guess."),
    ("Now is", " better than never."),
]


def test_zen_of_python_is_decoded_without_printing(capsys):
    text = zen_of_python()
    assert capsys.readouterr().out == ""
    assert text.startswith("The Zen of Python, by Tim Peters\n\nBeautiful is better than ugly.\n")
    for prompt, rest in ZEN_LINES:
        assert f"{prompt}{rest}\n" in text




@pytest.mark.parametrize("family", list(ZEN_DIRS))
def test_shipped_checkpoint_is_small_and_documented(family):
    directory = ZEN_DIRS[family]
    assert (directory / "model.safetensors").stat().st_size < 1_000_000
    meta = json.loads((directory / "config.json").read_text())
    assert set(meta["final_losses"]) == {"train", "val"}
    assert meta["tokenizer"]["chars"] == CharTokenizer.from_text(zen_of_python()).chars
    cfg = TrainConfig(**meta["training"])
    assert cfg == ZEN_CONFIGS[family]  # retraining with the defaults rebuilds it
    assert cfg.model_config(len(meta["tokenizer"]["chars"])).to_dict() == meta["model_config"]
    assert family_of(load_zen_model(directory)[0].config).name == family


@pytest.fixture(scope="module", params=list(ZEN_DIRS))
def zen64(request):
    return load_zen_model(ZEN_DIRS[request.param], dtype=torch.float64)


@pytest.mark.parametrize("prompt,expected", ZEN_LINES, ids=[p for p, _ in ZEN_LINES])
def test_reference_continues_zen_lines(zen64, prompt, expected):
    model, tokenizer = zen64
    out = reference_greedy(model, tokenizer.encode(prompt), len(expected)).tokens
    assert tokenizer.decode(out) == expected


def test_learning_rate_schedule_warms_up_then_decays_by_cosine():
    cfg = TrainConfig(learning_rate=1e-2, min_lr=1e-3, warmup_iters=10, max_iters=110)
    warmup = [learning_rate_at(i, cfg) for i in range(11)]
    assert warmup == sorted(warmup) and warmup[0] < 1e-3
    assert learning_rate_at(10, cfg) == pytest.approx(1e-2)
    assert learning_rate_at(60, cfg) == pytest.approx((1e-2 + 1e-3) / 2)  # cosine midpoint
    assert learning_rate_at(110, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(500, cfg) == 1e-3
    decay = [learning_rate_at(i, cfg) for i in range(10, 111)]
    assert decay == sorted(decay, reverse=True)


SHORT = {"max_iters": 4, "warmup_iters": 2, "eval_interval": 2, "eval_iters": 2, "log_interval": 1}


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", list(ZEN_CONFIGS))
def test_training_is_deterministic_for_a_seed(family):
    logs = []
    short = replace(ZEN_CONFIGS[family], **SHORT)
    first = train(short, log=logs.append)
    second = train(short, log=lambda line: None)
    other = train(replace(short, seed=7), log=lambda line: None)
    assert family_of(first.model.config).name == family
    a, b, c = weights(first.model), weights(second.model), weights(other.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert first.history == second.history and [h["iter"] for h in first.history] == [0, 2, 4]
    assert any("step 4: train loss" in line for line in logs) and any("iter     0/4 [" in line for line in logs)
    assert all(math.isfinite(v) for v in first.losses.values())


def test_training_refuses_a_text_shorter_than_a_block():
    with pytest.raises(ValueError, match="val split has"):
        train(TrainConfig(**SHORT), text="abcdefghij" * 30)


def test_train_command_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["--out-dir", str(tmp_path), "--max-iters", "2", "--eval-interval", "1", "--eval-iters", "1",
                 "--n-layer", "1", "--bias", "false"]) == 0
    assert "saved to" in capsys.readouterr().out
    model, tokenizer = load_zen_model(tmp_path)
    assert model.config.n_layer == 1 and model.config.bias is False
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["training"]["max_iters"] == 2 and set(meta["final_losses"]) == {"train", "val"}
    assert tokenizer.decode(tokenizer.encode("Beautiful")) == "Beautiful"


def test_train_command_trains_the_nanochat_twin(tmp_path, capsys):
    assert main(["--family", "nanochat", "--out-dir", str(tmp_path), "--max-iters", "2", "--eval-interval", "1",
                 "--eval-iters", "1"]) == 0
    model, _ = load_zen_model(tmp_path)
    assert model.config == ZEN_CONFIGS["nanochat"].model_config(model.config.vocab_size)
    assert model.config.n_kv_head == 2 < model.config.n_head


def test_nanochat_training_refuses_what_nanochat_has_not():
    with pytest.raises(ValueError, match="nanochat has no biases and no dropout"):
        TrainConfig(family="nanochat")
    with pytest.raises(ValueError, match="n_kv_head is nanochat's"):
        TrainConfig(n_kv_head=2)
