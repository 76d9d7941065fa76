"""``scripts/gpu-check``, the prepared GPU check: its dry run on a machine without a GPU (every gpu
test skips with its reason, exit 0, records, report and summary written), and its summary of the
records a GPU run writes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.core.records import read_records

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu-check"


def gpu_check():
    """The script as a module (it has no .py suffix to import it by)."""
    loader = SourceFileLoader("gpu_check", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    return module


@pytest.mark.slow  # a pytest subprocess collecting every case: ~10 s on a busy 2-core laptop
@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is what a machine without a GPU does")
def test_dry_run_skips_every_gpu_test_with_its_reason(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--time-limit", "300"], capture_output=True,
                          text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = list(ET.parse(out / "junit-gpu.xml").getroot().iter("testcase"))
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert cases and skipped == cases, "a test ran without a GPU"
    assert all(c.find("skipped").get("message") for c in skipped), "a skip without its reason"
    records = read_records([out])
    assert records and {r["status"] for r in records} == {"skip"} and {r["device"] for r in records} == {"cuda"}
    assert (out / "parity.html").is_file()
    for target in ("eager-cuda", "eager-cuda-tf32", "inductor-cuda", "tripy-fp32"):
        assert any(line.startswith(target) for line in proc.stdout.splitlines()), target
    assert "no CUDA device" in proc.stdout and "eager-cuda did not run" in proc.stdout


def record(target, status, check="logits", case="seed", **extra):
    return {"target": target, "device": "cuda", "status": status, "check": check, "case": case, **extra}


def test_summary_counts_statuses_and_reports_eager_cuda_error():
    records = [
        record("eager-cuda", "pass", metrics={"rmse": 5e-8, "max_abs": 6e-7}, baseline={"rmse": 4.1e-8, "max_abs": 4.7e-7}),
        record("eager-cuda", "pass", check="loss", metrics={"loss_abs": 1e-7}),
        record("tripy-fp32", "fail", metrics={"rmse": 3e-4, "max_abs": 2e-3}),
        record("tripy-fp32", "skip", check="setup", message="tripy-fp32: no engine"),
        record("eager", "pass", device="cpu"),  # the CPU tier is not summarised
    ]
    lines = gpu_check().summary(records)
    table = {parts[0]: parts[1:] for parts in map(str.split, lines)
             if len(parts) == 6 and all(p.isdigit() for p in parts[1:])}
    assert table["eager-cuda"] == ["2", "0", "0", "0", "0"] and table["tripy-fp32"] == ["0", "1", "0", "1", "0"]
    assert "eager" not in table
    assert any("skipped: tripy-fp32: no engine" in line for line in lines)
    (error,) = [line for line in lines if line.strip().startswith("seed")]
    assert "rmse 5e-08 (CPU 4.1e-08)" in error and "max_abs 6e-07 (CPU 4.7e-07)" in error


def test_bad_arguments_fail_before_anything_runs(tmp_path, capsys):
    (tmp_path / "old.jsonl").write_text("{}\n")
    with pytest.raises(SystemExit):
        gpu_check().main([str(tmp_path)])
    assert "already holds records" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check().main([str(tmp_path / "new"), "--time-limit", "0"])
    assert "must be positive" in capsys.readouterr().err
