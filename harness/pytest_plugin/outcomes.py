"""Pytest glue: the one place where the library's exceptions become pytest outcomes.

``UnsupportedHere`` is a skip with its message; ``CheckFailed`` and ``CheckError`` are failures
that print their message (every gate, or what the target did) without a Python traceback, since
the record already holds the verdict and a traceback into the harness says nothing about the
target. A failure whose records are all declared expected failures (``xfail``) is pytest's
xfail, with the declaration's reason.
"""

from __future__ import annotations

import pytest
from gpt_conformance.harness.core.errors import CheckError, CheckFailed, UnsupportedHere
from gpt_conformance.harness.pytest_plugin.plugin import SESSION_KEY


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    try:
        return (yield)
    except UnsupportedHere as exc:
        skipped, failed = str(exc), None
    except (CheckFailed, CheckError) as exc:
        skipped, failed = None, str(exc)
    # Outside the except blocks: raised inside them, pytest would print the message twice
    # ("During handling of the above exception, another exception occurred").
    if skipped is not None:
        pytest.skip(skipped)
    session = pyfuncitem.config.stash.get(SESSION_KEY, None)
    statuses = session.statuses.get(pyfuncitem.nodeid, []) if session is not None else []
    if "xfail" in statuses and not {"fail", "error", "xpass"} & set(statuses):
        pytest.xfail(f"declared expected failure: {failed}")
    pytest.fail(failed, pytrace=False)
