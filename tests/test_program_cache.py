"""The program cache (``gpt_conformance.targets.capture``): a torch.export program is traced once
and then loaded in later runs; a corrupt entry is detected by its sha256 and rebuilt; a change to
the capturing code, the config, the tracer or the variant is a different entry. The decode path's
prefill and step programs (``gpt_conformance.targets.export_decode``) are entries of the same cache."""

import pytest
import torch
from gpt_conformance.reference.decode import cache_shape
from gpt_conformance.reference.model import GPT, GPTConfig
from gpt_conformance.targets import capture
from gpt_conformance.targets.capture import DECODE_VARIANTS, EXPORTED_PROGRAM, ProgramStore, parameters_of
from gpt_conformance.targets.export_decode import FunctionalCachedForward
from gpt_conformance.targets.static_shapes import ArtifactCache, ArtifactCacheWarning

CONFIG = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8)


def store(directory) -> ProgramStore:
    """A fresh process's store: nothing held in memory, only what the cache directory has."""
    return ProgramStore(ArtifactCache(directory, 1 << 30, EXPORTED_PROGRAM))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def logits_of(program, model, idx):
    return program.module()(parameters_of(model), idx, torch.zeros_like(idx))[0]


def test_a_second_run_loads_the_program_instead_of_tracing(tmp_path, model):
    idx = torch.randint(0, 11, (3, 5))
    first = store(tmp_path)
    captured = first.export("export", model, "forward")
    assert (captured.source, first.captures) == ("captured", 1)
    assert first.export("export", model, "forward").source == "process"  # held: not loaded again
    second = store(tmp_path)
    loaded = second.export("export", model, "forward")
    assert (loaded.source, second.captures) == ("cache", 0)
    torch.testing.assert_close(logits_of(loaded.program, model, idx), model(idx, full_logits=True)[0], rtol=0, atol=0)


def test_a_flipped_byte_is_detected_and_the_entry_rebuilt(tmp_path, model):
    store(tmp_path).export("export", model, "forward")
    (entry,) = tmp_path.glob("*.pt2")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    rebuilding = store(tmp_path)
    with pytest.warns(ArtifactCacheWarning, match=r"sha256 .* \(corrupt\); rebuilding it"):
        rebuilt = rebuilding.export("export", model, "forward")
    assert (rebuilt.source, rebuilding.captures) == ("rebuilt", 1)
    assert store(tmp_path).export("export", model, "forward").source == "cache"  # the rebuilt entry is good


def test_an_edit_to_the_capturing_code_invalidates_the_entry(tmp_path, model, monkeypatch):
    code = tmp_path / "capture_copy.py"
    code.write_text(capture.CODE_FILES[0].read_text())
    monkeypatch.setattr(capture, "CODE_FILES", (code,))
    cache = tmp_path / "cache"
    assert store(cache).export("export", model, "forward").source == "captured"
    assert store(cache).export("export", model, "forward").source == "cache"
    code.write_text(code.read_text() + "\n# an edit\n")
    assert store(cache).export("export", model, "forward").source == "captured"


def test_the_hash_covers_this_module_and_the_reference_models():
    names = {path.name for path in capture.CODE_FILES}
    assert {"capture.py", "export_decode.py", "model.py", "nanochat.py", "families.py", "intermediates.py",
            "decode.py"} <= names


def test_a_second_run_loads_the_decode_programs_instead_of_tracing(tmp_path, model):
    first = store(tmp_path)
    assert [first.export("export", model, v).source for v in DECODE_VARIANTS] == ["captured", "captured"]
    second = store(tmp_path)
    loaded = {v: second.export("export", model, v) for v in DECODE_VARIANTS}
    assert ({c.source for c in loaded.values()}, second.captures) == ({"cache"}, 0)
    params = parameters_of(model)
    k, v = (torch.randn(cache_shape(CONFIG, 3, CONFIG.block_size)) for _ in range(2))  # batch 3: dynamic
    slots = torch.tensor([0, 1, 3])
    for variant, idx in (("prefill", torch.randint(0, 11, (3, 5))), ("step", torch.randint(0, 11, (3, 1)))):
        inputs = (idx, k, v, slots, torch.zeros(3, dtype=torch.long))
        got = loaded[variant].program.module()(params, *inputs)
        expected = FunctionalCachedForward(model)(params, *inputs)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_tracer_variant_and_config_are_separate_entries(tmp_path, model):
    programs = store(tmp_path)
    other = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=1, n_embd=8)).eval()
    for tracer, m, variant in [("export", model, "forward"), ("export", model, "intermediates"), ("export-strict", model, "forward"),
                               ("export", other, "forward")]:
        assert programs.export(tracer, m, variant).source == "captured"
    assert len(list(tmp_path.glob("*.pt2"))) == 4


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.delenv(capture.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert capture.cache_from_environment().directory == tmp_path / "gpt-conformance" / "programs"
    monkeypatch.setenv(capture.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert capture.cache_from_environment().directory == tmp_path / "elsewhere"
    monkeypatch.setenv(capture.CACHE_ENV, "off")
    assert capture.cache_from_environment() is None


def test_export_serdes_runs_a_deserialized_program_and_round_trips_only_a_fresh_capture(tmp_path, model):
    """A program traced by this process is saved and loaded in memory once; one loaded from the
    program cache went through torch.export.save and load already, and is used as it is."""
    idx = torch.randint(0, 11, (3, 5))
    first = store(tmp_path)
    captured = first.export("export", model, "forward")
    round_trip = first.round_tripped("export", model, "forward")
    assert round_trip.source == "round-trip"
    assert round_trip.program is not captured.program
    assert first.round_tripped("export", model, "forward").source == "process"  # once per process
    second = store(tmp_path)
    loaded = second.export("export", model, "forward")
    reused = second.round_tripped("export", model, "forward")
    assert (loaded.source, reused.source, reused.program is loaded.program) == ("cache", "process", True)
    assert second.captures == 0
    for program in (round_trip.program, reused.program):
        torch.testing.assert_close(logits_of(program, model, idx), model(idx, full_logits=True)[0], rtol=0, atol=0)
