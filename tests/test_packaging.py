"""The installed package: its import names and what the wheel holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.runner import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


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
