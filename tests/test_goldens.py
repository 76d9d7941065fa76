"""Goldens: the reference reproduces them, and a corrupt one is an error, never a pass."""

import json
import shutil

import pytest
import torch
from gpt_conformance.reference.cases import ALL_CASES, build_case, named_case
from gpt_conformance.reference.goldens import GOLDEN_DIR, GoldenError, load_golden, reference_outputs, sha256_file

FAST_CASES = [spec for spec in ALL_CASES if not spec.slow]


@pytest.mark.parametrize("spec", FAST_CASES, ids=lambda s: s.name)
def test_reference_reproduces_its_goldens(spec):
    golden = load_golden(spec)
    model, idx, targets = build_case(spec)
    logits64, loss64, logits32, loss32 = reference_outputs(model, idx, targets)
    # fp64 on another machine differs only by reassociation (~1e-15 relative); a change to the
    # model's math moves logits by >= 1e-4. 1e-9 of the logit range separates the two.
    scale = float(golden.logits64.abs().max())
    assert float((logits64 - golden.logits64).abs().max()) <= 1e-9 * scale
    assert abs(float(loss64) - float(golden.loss64)) <= 1e-9 * abs(float(golden.loss64))
    # fp32 differs across CPUs by SIMD width and thread count: assert_close's fp32 defaults.
    torch.testing.assert_close(logits32, golden.logits32, rtol=1.3e-6, atol=1e-5)


@pytest.fixture
def golden_copy(tmp_path):
    shutil.copytree(GOLDEN_DIR, tmp_path / "goldens", ignore=shutil.ignore_patterns("gpt2-*"))
    return tmp_path / "goldens"


def test_corrupt_tensor_file_is_reported(golden_copy):
    path = golden_copy / "seed.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GoldenError, match=r"seed.safetensors is corrupt: sha256 .* does not match"):
        load_golden(named_case("seed"), golden_copy)


def test_golden_for_another_case_definition_is_reported(golden_copy):
    meta_path = golden_copy / "seed.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_layer"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GoldenError, match="different case definition"):
        load_golden(named_case("seed"), golden_copy)


def test_missing_golden_names_the_fix(tmp_path):
    with pytest.raises(GoldenError, match="missing .* run pytest --update-goldens"):
        load_golden(named_case("seed"), tmp_path)


def test_metadata_hash_matches_committed_file():
    for spec in FAST_CASES:
        meta = json.loads((GOLDEN_DIR / f"{spec.name}.json").read_text())
        assert meta["sha256"] == sha256_file(GOLDEN_DIR / f"{spec.name}.safetensors"), spec.name
