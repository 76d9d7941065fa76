"""The harness's own tests start pytest in subprocesses, as a user would. Under pytest-xdist (CI runs
this suite with ``-n auto``) a worker's ``PYTEST_XDIST_*`` variables would reach those processes and
make them take themselves for xdist workers: pytest-benchmark turns itself off in them, and the
harness names their records after the worker. Each test here runs without them (``tests.runner``
leaves them out too, for module fixtures); the worker itself read them when it started, and a
conformance case of the same worker still sees them."""

import pytest

from tests.runner import XDIST_WORKER_VARIABLES


@pytest.fixture(autouse=True)
def _not_an_xdist_worker_to_subprocesses(monkeypatch):
    for name in XDIST_WORKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
