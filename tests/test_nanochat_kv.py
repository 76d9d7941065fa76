"""An outside plugin that wraps nanochat's own ``GPT.forward(..., kv_cache=...)`` in a few lines
(``tests/nanochat_kv.py``) gets decode coverage: parity, full length and its own forward pass
pass on every nanochat case; ragged batches and reused states, which nanochat's cache does not
offer, skip and say why."""

from tests.runner import run_pytest

NANOCHAT_CASES = ("nanochat-seed", "nanochat-mqa", "nanochat-gqa")


def test_nanochat_kv_cache_gets_decode_coverage(tmp_path):
    run = run_pytest("-p", "tests.nanochat_kv", "cases/test_decode_path.py", "--target", "nanochat-kv-cache",
                     report_dir=tmp_path / "records")
    records = {(r["check"], r["case"]): r for r in run.records if r["target"] == "nanochat-kv-cache"}
    for case in NANOCHAT_CASES:
        for check in ("decode", "decode-forward"):
            assert records[(check, case)]["status"] == "pass", (check, case, records[(check, case)]["message"])
        for check in ("decode-ragged", "decode-reuse"):
            if (check, case) in records:
                assert records[(check, case)]["status"] == "skip"
    assert records[("decode-full", "nanochat-gqa")]["status"] == "pass"
    assert "Decoding.padding is None" in records[("decode-ragged", "nanochat-gqa")]["message"]
    assert "reusable_state is False" in records[("decode-reuse", "nanochat-gqa")]["message"]
    assert run.proc.returncode == 0, run.proc.stdout[-2000:]
