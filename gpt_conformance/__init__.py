"""gpt-conformance, installed under one name so that nothing of ours can collide with a user's own
``targets/``, ``reference.py`` or ``harness`` on ``sys.path``.

Its layers are ``gpt_conformance.harness`` (the library), ``gpt_conformance.reference`` (the oracle),
``gpt_conformance.targets`` (the built-in adapters) and ``gpt_conformance.cases`` (the conformance
suite). A wheel places them inside this package (pyproject's ``package-dir``). A checkout keeps them
as the top-level folders of the design card, beside this one; there the package's path is extended
to the checkout's root, so the same import names reach the same files.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent

if not (_HERE / "harness").is_dir():
    __path__.append(str(_HERE.parent))  # noqa: F821 (a package's __path__ is a module global)
