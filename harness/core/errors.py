"""Core layer: the exceptions by which the library reports a check's outcome.

The library (``gpt_conformance.harness.core``, ``gpt_conformance.harness.checks``) never calls pytest. It raises these, and the
pytest plugin maps them to outcomes in one place (``gpt_conformance.harness.pytest_plugin.outcomes``); the
command line and a notebook catch them directly.
"""

from __future__ import annotations


class UnsupportedHere(Exception):
    """This check cannot run here: a target's variant that cannot work on the installed software
    (raised by ``Target.prepare``), a model family or shape the target does not declare, a check
    that does not apply. Becomes a skip with this message. Use it only for known capability gaps,
    never to hide a wrong result."""


class CheckError(Exception):
    """The check could reach no verdict: the target raised or returned something malformed, or a
    golden is unusable. The ``error`` record is written before this is raised; it becomes a failed
    test, never a pass."""


class CheckFailed(AssertionError):
    """A check's verdict is not a pass; the message explains every gate. Already recorded."""

    def __init__(self, message: str, verdict: object = None):
        super().__init__(message)
        self.verdict = verdict
