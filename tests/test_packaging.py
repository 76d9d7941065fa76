"""The installed package: its import names, what the wheel holds, and a plugin that leaves every
other pytest suite in the venv as it was (the plugin loads with every pytest run there)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.runner import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PLUGIN = "gpt_conformance.harness.pytest_plugin.plugin"


def test_the_wheel_packages_are_the_folders_that_hold_an_init():
    """pyproject lists the wheel's packages by hand (a checkout's folders become subpackages of
    gpt_conformance): a new subpackage missing from the list would be missing from the wheel."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    mapping = {"gpt_conformance": "gpt_conformance", **setuptools["package-dir"]}
    assert sorted(setuptools["packages"]) == sorted(mapping)
    for package, folder in mapping.items():
        assert (ROOT / folder / "__init__.py").is_file(), (package, folder)
    top = {name.split(".")[1] for name in mapping if "." in name}
    folders = {str(init.parent.relative_to(ROOT)) for name in top for init in (ROOT / name).rglob("__init__.py")}
    assert folders == set(mapping.values()) - {"gpt_conformance"}


REGISTERED = ("import sys; from gpt_conformance.harness.core.targets import registry; "
              "errors = registry.load_entry_points(); print(sorted(registry.names())); print(errors)")


def test_a_users_own_targets_and_reference_on_sys_path_change_nothing(tmp_path):
    """A backend author's repository with ``targets/``, ``reference.py`` and ``harness/`` of its own
    (pytest puts its rootdir on sys.path) registers the same targets as a clean directory."""
    own = tmp_path / "their-repo"
    for package in ("targets", "harness"):
        (own / package).mkdir(parents=True)
        (own / package / "__init__.py").write_text("raise ImportError('their own package was imported')\n")
    (own / "targets" / "eager.py").write_text("TARGETS = []\n")
    (own / "reference.py").write_text("raise ImportError('their own reference.py was imported')\n")
    clean = tmp_path / "clean"
    clean.mkdir()

    def registered(cwd: Path) -> str:
        env = {**os.environ, "PYTHONPATH": str(cwd)}
        proc = subprocess.run([sys.executable, "-c", REGISTERED], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    shadowed, plain = registered(own), registered(clean)
    assert shadowed == plain and "'eager'" in plain and "'inductor'" in plain, (shadowed, plain)


# --- another suite in the same venv -------------------------------------------------------------
FOREIGN_SUITE = textwrap.dedent('''
    import json, os, pathlib
    import pytest
    import torch
    from hypothesis import given, settings, strategies as st

    @pytest.fixture
    def target():
        return "their own"

    def test_own_target_fixture(target):
        assert target == "their own"

    def test_hypothesis_defaults():
        d = settings.default
        seen = {"max_examples": d.max_examples, "derandomize": d.derandomize, "database": type(d.database).__name__,
                "deadline": repr(d.deadline), "run_id_env": sorted(k for k in os.environ if "CONFORMANCE" in k),
                "torch_threads": torch.get_num_threads()}
        pathlib.Path(os.environ["FOREIGN_SEEN"]).write_text(json.dumps(seen))

    @given(st.integers())
    def test_a_property(n):
        assert n == n

    @pytest.mark.slow
    def test_their_slow_marker():
        pass
''')


def run_foreign_suite(python: str, directory: Path, *args: str, ci_machine: bool) -> tuple[dict, dict, str]:
    """Run FOREIGN_SUITE with ``python -m pytest`` in ``directory``, on a machine that looks like CI
    (``CI=true``: Hypothesis then loads its own ``ci`` profile by itself) or not: (outcomes, what the
    Hypothesis test saw, output)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "test_theirs.py").write_text(FOREIGN_SUITE)
    seen, junit = directory / "seen.json", directory / "junit.xml"
    # None of ours from the caller's environment (a GPT_CONFORMANCE_PROGRAM_CACHE=off, say): the suite
    # must find only what the plugin itself would set.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("GPT_CONFORMANCE_")}
    env["FOREIGN_SEEN"] = str(seen)
    env.pop("CI", None)
    if ci_machine:
        env["CI"] = "true"
    proc = subprocess.run([python, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}",
                           "test_theirs.py", *args], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    junit.unlink()
    return outcomes, json.loads(seen.read_text()), proc.stdout + proc.stderr


def assert_foreign_suite_untouched(python: str, tmp_path: Path, ignored: tuple[str, ...] = ()) -> None:
    """The same suite, with the plugin and without it: the same outcomes, the same Hypothesis
    settings, no gpt-conformance variable in the environment, the same files where it ran
    (except ``ignored``), on a CI machine and off one. (A plugin profile named ``ci`` once replaced
    Hypothesis's own, which Hypothesis loads on CI machines: that suite ran 25 examples there.)"""
    for ci_machine in (False, True):
        assert_foreign_run_untouched(python, tmp_path / ("ci" if ci_machine else "local"), ignored, ci_machine)


def assert_foreign_run_untouched(python: str, tmp_path: Path, ignored: tuple[str, ...], ci_machine: bool) -> None:
    with_plugin, without = tmp_path / "with-plugin", tmp_path / "without"
    outcomes, seen, output = run_foreign_suite(python, with_plugin, ci_machine=ci_machine)
    plain = run_foreign_suite(python, without, "-p", f"no:{PLUGIN}", ci_machine=ci_machine)
    assert (outcomes, seen) == plain[:2], output
    assert seen["derandomize"] == ci_machine, seen  # Hypothesis's own ci profile, or its default
    assert outcomes == dict.fromkeys(["test_own_target_fixture", "test_hypothesis_defaults", "test_a_property",
                                      "test_their_slow_marker"], "passed"), output
    assert seen["run_id_env"] == [] and seen["max_examples"] == 100, seen  # Hypothesis's own default
    written = [sorted(p.name for p in run.iterdir() if p.name not in ignored) for run in (with_plugin, without)]
    assert written[0] == written[1]
    assert not (with_plugin / "reports").exists()
    assert "gpt-conformance" not in output


def test_another_suite_in_the_venv_runs_as_if_the_plugin_were_not_installed(tmp_path):
    # An editable install's modules are not in site-packages, so Hypothesis counts them as the
    # user's own code and caches their constants in .hypothesis/constants/; installed from a wheel
    # they are not (test_plugin_api.py checks that venv with nothing ignored).
    assert_foreign_suite_untouched(sys.executable, tmp_path, ignored=(".hypothesis",))
