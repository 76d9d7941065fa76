"""Tokenizers: the char-level one, and GPT-2's BPE through tiktoken with the network cut off."""

import hashlib
import inspect
import socket

import pytest
from gpt_conformance.reference import tokenizers
from gpt_conformance.reference.tokenizers import GPT2_BPE_FILES, CharTokenizer, TokenizerError

# The Tripy nanoGPT example's prompt and the ids GPT-2's tokenizer gives it (from the DESIGN
# notes, which took them from the Tripy example; not computed here).
TRIPY_PROMPT = "What is the answer to life, the universe, and everything?"
TRIPY_IDS = [2061, 318, 262, 3280, 284, 1204, 11, 262, 6881, 11, 290, 2279, 30]


def test_char_tokenizer_round_trip():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    assert CharTokenizer.from_dict(tok.to_dict()) == tok


def test_char_tokenizer_names_unknown_character_and_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TokenizerError, match=r"character 'z' at position 2"):
        tok.encode("abz")
    with pytest.raises(TokenizerError, match=r"token id 3 at position 1 is outside \[0, 3\)"):
        tok.decode([0, 3])


def test_char_tokenizer_rejects_bad_vocabularies():
    with pytest.raises(TokenizerError, match="at least one"):
        CharTokenizer("")
    with pytest.raises(TokenizerError, match="sorted distinct"):
        CharTokenizer("ba")
    with pytest.raises(TokenizerError, match="not a char tokenizer"):
        CharTokenizer.from_dict({"kind": "bpe"})


def test_our_hashes_and_urls_are_the_ones_tiktoken_expects():
    from tiktoken_ext import openai_public

    source = inspect.getsource(openai_public.gpt2)
    for name, (url, sha256) in GPT2_BPE_FILES.items():
        assert url in source, f"tiktoken no longer downloads {name} from {url}"
        assert sha256 in source, f"tiktoken no longer expects sha256 {sha256} for {name}"


def test_shipped_bpe_files_match_tiktoken_hashes():
    files = tokenizers.gpt2_bpe_files()
    for name, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == GPT2_BPE_FILES[name][1]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, an empty tiktoken cache, and no encodings already loaded in this process."""
    import tiktoken.registry

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    return tmp_path / "tiktoken-cache"


def test_offline_fixture_really_blocks_downloads(offline):
    import tiktoken

    with pytest.raises(OSError, match="network access attempted"):
        tiktoken.get_encoding("gpt2")


def test_gpt2_tokenizer_offline(offline):
    enc = tokenizers.gpt2_tokenizer()
    assert enc.encode(TRIPY_PROMPT) == TRIPY_IDS
    assert enc.decode(TRIPY_IDS) == TRIPY_PROMPT
    assert enc.n_vocab == 50257 and enc.eot_token == tokenizers.GPT2_EOT_TOKEN


def test_tiktoken_get_encoding_offline_after_seeding(offline):
    import tiktoken

    cache = tokenizers.seed_tiktoken_cache()
    assert cache == offline
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        hashlib.sha1(url.encode()).hexdigest() for url, _ in GPT2_BPE_FILES.values())
    enc = tiktoken.get_encoding("gpt2")
    assert enc.encode(TRIPY_PROMPT) == TRIPY_IDS
    assert enc.decode(TRIPY_IDS) == TRIPY_PROMPT


def test_corrupt_cache_entry_is_replaced(offline):
    cache = tokenizers.seed_tiktoken_cache()
    victim = cache / hashlib.sha1(GPT2_BPE_FILES["vocab.bpe"][0].encode()).hexdigest()
    victim.write_bytes(b"not the vocabulary")
    tokenizers.seed_tiktoken_cache()
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == GPT2_BPE_FILES["vocab.bpe"][1]


def test_tampered_package_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "data").mkdir()
    for name in GPT2_BPE_FILES:
        (tmp_path / "data" / name).write_text("tampered")
    monkeypatch.setattr(tokenizers.resources, "files", lambda package: tmp_path)
    with pytest.raises(TokenizerError, match="but tiktoken expects"):
        tokenizers.gpt2_bpe_files()


def test_disabled_tiktoken_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    with pytest.raises(TokenizerError, match="caching is off"):
        tokenizers.seed_tiktoken_cache()
