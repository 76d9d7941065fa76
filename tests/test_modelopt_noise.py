"""modelopt's known noise is kept out of every run's output, and nothing else is: its warning about
the installed transformers version, and the "Inserted N quantizers" it prints on each quantize."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from gpt_conformance.reference.cases import build_case, named_case
from gpt_conformance.targets.modelopt import ModeloptWeightOnly, pass_through_unexpected, quiet_modelopt_import

from tests.runner import ROOT

MESSAGE = ("transformers 5.24.0 is not tested with current version of modelopt and may cause issues. Please "
           "install recommended version with `pip install -U nvidia-modelopt[hf]` if working with HF models.")


def test_only_modelopts_transformers_version_warning_is_filtered():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_modelopt_import():
            warnings.warn_explicit(MESSAGE, UserWarning, "modelopt/torch/__init__.py", 55, module="modelopt.torch")
            warnings.warn_explicit(MESSAGE, UserWarning, "mine.py", 1, module="mine")
            warnings.warn_explicit("CVE-2026-4372", UserWarning, "modelopt/torch/__init__.py", 66,
                                   module="modelopt.torch")
            warnings.warn_explicit(MESSAGE, DeprecationWarning, "modelopt/torch/__init__.py", 55,
                                   module="modelopt.torch")
    assert [(w.message.args[0][:16], w.category, w.filename) for w in seen] == [
        (MESSAGE[:16], UserWarning, "mine.py"), ("CVE-2026-4372", UserWarning, "modelopt/torch/__init__.py"),
        (MESSAGE[:16], DeprecationWarning, "modelopt/torch/__init__.py")]


@pytest.mark.slow
def test_importing_modelopt_through_the_target_shows_no_version_warning():
    pytest.importorskip("modelopt", reason="modelopt not installed (pip install 'gpt-conformance[quant]')")
    plain = "import modelopt.torch.quantization"
    quiet = f"from targets.modelopt import quiet_modelopt_import\nwith quiet_modelopt_import():\n    {plain}"
    runs = {name: subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=ROOT, capture_output=True,
                                 text=True, check=True) for name, code in (("plain", plain), ("quiet", quiet))}
    if "is not tested with current version of modelopt" not in runs["plain"].stderr:
        pytest.skip("modelopt tested the installed transformers version: it does not warn, nothing to filter")
    assert "is not tested with current version of modelopt" not in runs["quiet"].stderr
    # Every other warning of the import is still shown.
    others = [line for line in runs["plain"].stderr.splitlines() if "Warning: " in line and "modelopt and" not in line]
    assert others and all(line in runs["quiet"].stderr for line in others)


def test_quantize_prints_nothing_but_unexpected_lines(capsys):
    pytest.importorskip("modelopt", reason="modelopt not installed (pip install 'gpt-conformance[quant]')")
    model, _, _ = build_case(named_case("seed"))
    ModeloptWeightOnly(8).prepare(model, model.config)
    out, _ = capsys.readouterr()
    assert "quantizers" not in out
    pass_through_unexpected("Inserted 33 quantizers\nCalibration took a detour\n\nInserted 2 quantizers\n")
    assert capsys.readouterr().out == "Calibration took a detour\n"
