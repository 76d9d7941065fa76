"""``pytest -n N --dist loadgroup`` (harness/pytest_plugin/parallel.py): each target's tests run
on one xdist worker, with the targets that run its programs, so each program is loaded once."""

import json
import re
import subprocess
import sys
import textwrap

from gpt_conformance.harness.pytest_plugin.parallel import (
    program_groups,
    scope_of,
    slow_start_groups,
    slow_starts_first,
    target_group,
)

from tests.runner import ROOT, run_pytest

GROUPS = {"export": "export", "export-serdes": "export", "export-strict": "export-strict",
          "modelopt-int8-wo": "modelopt-int8-wo", "eager": "eager", "eager-fp16": "eager-fp16"}


def test_the_longest_target_name_among_the_parameter_ids_parts_is_the_target():
    assert target_group("cases/test_parity.py::test_logits_parity[export-serdes-seed]", GROUPS) == "export"
    assert target_group("cases/test_parity.py::test_logits_parity[export-strict-nanochat-gqa]", GROUPS) == "export-strict"
    assert target_group("cases/test_parity.py::test_loss_parity[export-one-token]", GROUPS) == "export"
    assert target_group("cases/test_precision.py::test_quality[modelopt-int8-wo-zen]", GROUPS) == "modelopt-int8-wo"
    assert target_group("cases/test_precision.py::test_quality_on_zen_text[eager-fp16]", GROUPS) == "eager-fp16"
    assert target_group("cases/test_tiers.py::test_eager_tier[eager]", GROUPS) == "eager"
    # The target is not always the first part: the greedy cases put the case first.
    assert target_group("cases/test_greedy.py::test_zen_greedy[zen-export-serdes-Flat is]", GROUPS) == "export"
    assert target_group("cases/test_greedy.py::test_zen_greedy[zen-nanochat-eager-fp16-Flat is]", GROUPS) == "eager-fp16"


def test_another_suites_tests_keep_their_own_scope_or_xdist_group():
    assert target_group("tests/test_x.py::test_y[exporter-1]", GROUPS) is None  # a prefix is not a name
    assert scope_of("tests/test_x.py::test_y[1-2]", GROUPS) == "tests/test_x.py::test_y[1-2]"
    assert scope_of("tests/test_x.py::test_y", GROUPS) == "tests/test_x.py::test_y"
    assert scope_of("tests/test_x.py::test_y[1]@io", GROUPS) == "io"  # @pytest.mark.xdist_group("io")
    assert scope_of("cases/test_parity.py::test_loss_parity[export-serdes-seed]", GROUPS) == "target:export"
    # The marks the workers wrote (rundir.py), where pytest 9.2 drops xdist's "@" suffix.
    marked = {"tests/test_x.py::test_y[1]": "io"}
    assert scope_of("tests/test_x.py::test_y[1]", GROUPS, marked) == "io"
    assert scope_of("tests/test_x.py::test_y[2]", GROUPS, marked) == "tests/test_x.py::test_y[2]"


def test_the_slow_starting_groups_are_handed_out_first_in_xdists_order_otherwise():
    queue = {"target:eager": {"a": False, "b": False, "c": False}, "target:export": {"d": False, "e": False},
             "latency": {"f": False}, "target:export-strict": {"g": False}}
    slow = {"export", "export-strict"}
    assert list(slow_starts_first(queue, slow)) == ["target:export", "target:export-strict", "target:eager", "latency"]
    assert slow_starts_first(queue, slow)["target:export"] == queue["target:export"]


def test_the_torch_export_tracers_declare_a_slow_cold_start():
    # export-serdes runs export's programs: its group is export's, which is slow already.
    assert {"export", "export-strict", "inductor", "onnxruntime"} <= slow_start_groups()
    assert "eager" not in slow_start_groups()


def test_an_xdist_group_runs_on_one_worker_and_other_tests_on_both(tmp_path):
    # pytest-xdist 3.8 marks a group by appending "@name" to the node id, which pytest 9.2 ignores
    # (pytest-dev/pytest-xdist#1386): the harness's scheduler reads the marks the workers wrote.
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.xdist_group("together")

        @pytest.mark.parametrize("i", range(8))
        def test_marked(i):
            pass
    """))
    (tmp_path / "test_free.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_free(i):
            pass
    """))
    # run_pytest passes -q: -vv makes it -v, which names each test's worker.
    run = run_pytest("-n", "2", "--dist", "loadgroup", "-vv", report_dir=tmp_path / "reports", cwd=tmp_path)
    assert run.proc.returncode == 0, run.proc.stdout[-3000:]
    ran = re.findall(r"\[(gw\d)\] .*PASSED (test_\w+)\.py", run.proc.stdout)
    workers = {module: {worker for worker, name in ran if name == module} for module in ("test_grouped", "test_free")}
    assert len(ran) == 16, run.proc.stdout[-3000:]
    assert len(workers["test_grouped"]) == 1, workers
    assert len(workers["test_free"]) == 2, workers  # the control: both workers took tests


def test_two_workers_split_the_targets_and_export_serdes_reuses_exports_programs(tmp_path):
    report_dir = tmp_path / "reports"
    run = run_pytest("cases/test_parity.py", "-m", "cpu", "-k", "seed and not nanochat", "-n", "2", "--dist",
                     "loadgroup", "--target", "export", "--target", "export-serdes", "--target", "eager",
                     "--target", "eager-fp16", "--target", "export-strict", report_dir=report_dir)
    assert run.proc.returncode == 0, run.proc.stdout[-3000:]
    workers = {}
    for path in report_dir.glob("records-*-gw*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            workers.setdefault(record["target"], set()).add(path.stem.rsplit("-", 1)[-1])
            if record["target"] == "export-serdes" and record["check"] == "loss":
                programs = record["target_environment"]["programs"]
    assert set(workers) == {"export", "export-serdes", "eager", "eager-fp16", "export-strict"}
    assert all(len(found) == 1 for found in workers.values()), workers  # each target on one worker
    assert workers["export"] == workers["export-serdes"]
    assert workers["export"] != workers["export-strict"]  # the two tracers' groups start first, one each
    assert len(set().union(*workers.values())) == 2  # and both workers had some
    # export-serdes ran export's program as this worker held it: it loaded and traced none.
    assert set(programs) <= {"process", "round-trip"}, programs


def test_every_conformance_test_of_the_cpu_tier_is_grouped_by_its_target():
    proc = subprocess.run([sys.executable, "-m", "pytest", "cases", "-m", "cpu", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, check=False)
    nodeids = [line for line in proc.stdout.splitlines() if line.startswith("cases/")]
    assert len(nodeids) > 100, proc.stdout[-2000:]
    groups = program_groups()
    per_tier = "cases/test_tiers.py::test_tier_has_runnable_target["  # one per tier, not per target
    ungrouped = [nodeid for nodeid in nodeids if target_group(nodeid, groups) is None and not nodeid.startswith(per_tier)]
    assert not ungrouped, ungrouped[:10]
