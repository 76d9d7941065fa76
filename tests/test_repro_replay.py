"""A printed repro command replays as printed: run from the directory of the failing run, in a
fresh shell, with a target plugin module that lives outside the repository (importable in the
failing run only through that run's PYTHONPATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.runner import ROOT, run_pytest

OUTSIDE_PLUGIN = '''
import copy
from dataclasses import replace

from gpt_conformance.harness.api import Target
from gpt_conformance.reference.model import GPT


class EpsTarget(Target):
    """A planted bug: LayerNorm eps 1e-3 instead of 1e-5."""

    name = "outside-eps"

    def prepare(self, model, config):
        broken = GPT(replace(config, layer_norm_eps=1e-3)).eval()
        broken.load_state_dict(copy.deepcopy(model.state_dict()))
        return lambda idx, targets=None: broken(idx, targets, full_logits=True)


def pytest_gpt_conformance_register(registry):
    registry.register(EpsTarget(), source=__name__)
'''


def printed_command(stdout: str) -> str:
    lines = [re.sub(r"^E?\s+", "", line) for line in stdout.splitlines()]  # pytest prefixes "E   "
    return next(lines[i + 1] for i, line in enumerate(lines) if line == "reproduce with:")


def test_the_printed_repro_replays_from_the_run_directory_with_an_outside_plugin(tmp_path):
    outside, run_dir = tmp_path / "outside", tmp_path / "run"
    outside.mkdir()
    run_dir.mkdir()
    (outside / "outside_eps_plugin.py").write_text(OUTSIDE_PLUGIN)
    found_examples = ROOT / "cases" / "test_properties.py"
    first, records, _ = run_pytest(f"{found_examples}::test_found_example", "-k", "nightly-int8-loss",
                                   "-p", "outside_eps_plugin", "--target", "outside-eps", cwd=run_dir,
                                   pythonpath=(outside,), report_dir=tmp_path / "first")
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    command = printed_command(first.stdout)
    assert command.startswith(f"PYTHONPATH={outside}"), command
    assert [r["repro"] for r in records if r["status"] == "fail"][0] == command

    # A fresh shell in the run's directory: pytest on PATH as after `. .venv/bin/activate`, and
    # none of the failing run's PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPT_CONFORMANCE_RUN_ID")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    replay = subprocess.run(command, shell=True, cwd=run_dir, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    assert replay.returncode == 1, replay.stdout[-3000:] + replay.stderr[-3000:]
    assert "1 failed" in replay.stdout and "test_property_repro[outside-eps]" in replay.stdout, replay.stdout[-3000:]
    assert "property-parity" in replay.stdout, replay.stdout[-3000:]
