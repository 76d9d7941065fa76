"""Pytest glue: ``pytest -n N --dist loadgroup`` runs each target's tests on one pytest-xdist worker.

The costly part of many targets is per process and per config, not per test: the export targets
load or trace one program per (tracer, config, variant), about a second each, and every test of
a config reuses it (``gpt_conformance.targets.capture``). xdist's ``load`` hands tests to
whichever worker is free, so each worker ends up loading nearly every program: two workers do
the loading twice. Under ``--dist loadgroup`` this scheduler keeps a target's tests together
instead, with the targets that run its programs (``Target.program_group``: ``export-serdes``
runs ``export``'s), so each program is loaded by one worker.

A test marked ``@pytest.mark.xdist_group(name)`` keeps its group here, as under xdist's own
``loadgroup``. xdist carries the mark to the controller by appending ``@name`` to the test's node
id, which pytest 9.2 no longer reads (pytest-dev/pytest-xdist#1386: every such group was silently
ignored, this harness's latency cases and shared pytest runs included). So each worker also writes
the marks of the tests it collected to the run's directory (``rundir.py``), and the scheduler reads
them there: all the workers have collected before the first test is scheduled. A test that is
neither marked nor a conformance test is a group of its own, as under ``load``. A conformance
test's target is read from its parameter id (the controller collects nothing), where the target's
name is one of the ``-``-joined parts (``test_zen_greedy[zen-eager-Flat is]``). A wrong reading
would cost time only, never a verdict: grouping decides where a test runs, not how.
The latency cases are one group of their own (``cases/test_latency.py``, ``quiet.py``).

xdist hands out groups largest first (by test count), two to each worker at the start, then one
whenever a worker is nearly done. The groups of targets that declare ``slow_cold_start`` (the two
torch.export tracers; inductor and onnxruntime in the slow tier) go ahead of that order instead,
so they start on different workers: a cold run spends most of its time tracing their programs,
and when both tracers landed on one worker it did 145 s of target work against the other's 53 s
(a fresh clone's ``pytest -m cpu -n auto --dist loadgroup``, 2 workers).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpt_conformance.harness.core.targets import registry
from gpt_conformance.harness.pytest_plugin.rundir import shared_directory

MARKS_FILE = "xdist-groups-{worker}.json"  # in the run's directory: {node id: group} of marked tests


def program_groups() -> dict[str, str]:
    """Each registered target's name -> its program group (its own name where it declares none)."""
    return {target.name: target.program_group or target.name for target in registry}


def slow_start_groups() -> set[str]:
    """The program groups of the registered targets that declare ``slow_cold_start``."""
    groups = program_groups()
    return {groups[target.name] for target in registry if target.slow_cold_start}


def target_group(nodeid: str, groups: dict[str, str]) -> str | None:
    """The program group of the target in ``nodeid``'s parameter id (``groups``: target name ->
    group): the longest target name that is a run of the id's ``-``-joined parts; None for
    another test."""
    if "[" not in nodeid:
        return None
    param_id = "-" + nodeid[nodeid.index("[") + 1:].rstrip("]") + "-"
    names = [name for name in groups if f"-{name}-" in param_id]
    return groups[max(names, key=len)] if names else None


def scope_of(nodeid: str, groups: dict[str, str], marked: dict[str, str] | None = None) -> str:
    """The unit of scheduling that ``nodeid`` belongs to (``marked``: node id -> its xdist_group)."""
    if marked and nodeid in marked:
        return marked[nodeid]
    if "@" in nodeid:  # xdist_group's suffix, where pytest reads it: that group, as xdist's loadgroup has it
        return nodeid.rsplit("@", 1)[-1]
    group = target_group(nodeid, groups)
    return f"target:{group}" if group is not None else nodeid


def slow_starts_first(workqueue: dict[str, dict], slow: set[str]) -> dict[str, dict]:
    """``workqueue`` (scope -> its tests, in xdist's order) with the ``slow`` groups' scopes ahead."""
    ahead = {f"target:{group}" for group in slow}
    return {scope: tests for scope, tests in sorted(workqueue.items(), key=lambda item: item[0] not in ahead)}


def xdist_group_of(item: pytest.Item) -> str | None:
    """The group of ``item``'s ``xdist_group`` marks, named as xdist names it (joined by ``_``)."""
    names = {str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
             for mark in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) if names else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An xdist worker under ``--dist loadgroup``: write the marked tests' groups for the scheduler."""
    worker = getattr(config, "workerinput", {}).get("workerid")  # None on the controller or a serial run
    directory = shared_directory(config) if worker else None
    if directory is None or not getattr(config.option, "loadgroup", False):  # xdist sets it on a worker
        return
    marked = {item.nodeid: group for item in items if (group := xdist_group_of(item)) is not None}
    path = directory / MARKS_FILE.format(worker=worker)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(marked))
    partial.replace(path)  # whole or absent: the controller never reads half a file


def marked_groups(directory: Path | None) -> dict[str, str]:
    """Every worker's {node id: xdist_group} (they collected the same tests)."""
    marked: dict[str, str] = {}
    for path in sorted(directory.glob(MARKS_FILE.format(worker="*"))) if directory else ():
        marked.update(json.loads(path.read_text()))
    return marked


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "loadgroup":
        return None  # xdist's own scheduler
    from xdist.scheduler import LoadScopeScheduling

    groups, slow = program_groups(), slow_start_groups()

    class TargetGroupScheduling(LoadScopeScheduling):
        ordered = False
        marked: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.marked is None:  # first called once every worker has collected
                self.marked = marked_groups(shared_directory(config))
            return scope_of(nodeid, groups, self.marked)

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:  # the queue is complete when the first unit is handed out
                queue = slow_starts_first(dict(self.workqueue), slow)
                self.workqueue.clear()
                self.workqueue.update(queue)
                self.ordered = True
            super()._assign_work_unit(node)

    return TargetGroupScheduling(config, log)
