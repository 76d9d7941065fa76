"""gpt-conformance, installed under one name so that nothing of ours can collide with a user's own
``targets/``, ``reference.py`` or ``harness`` on ``sys.path``.

Its layers are ``gpt_conformance.harness`` (the library), ``gpt_conformance.reference`` (the oracle),
``gpt_conformance.targets`` (the built-in adapters) and ``gpt_conformance.cases`` (the conformance
suite). A wheel places them inside this package (pyproject's ``package-dir``). A checkout keeps them
as the top-level folders of the design card; this folder links to them (``harness -> ../harness``
and so on), so the same import names reach the same files for Python, mypy and editors alike.
"""
