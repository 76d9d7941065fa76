"""The CI workflows under .github/workflows parse, have the right job graph, and run only
commands, options, markers and profiles that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from gpt_conformance.harness.cli import build_parser, cmd_report
from hypothesis import settings

yaml = pytest.importorskip("yaml", reason="pyyaml is not installed (pip install -e '.[test]')")
WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"
DOCS = WORKFLOWS.parent.parent / "docs"
LOGIC_WORDS = {"and", "or", "not"}


def load(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def commands(job: dict) -> list[str]:
    """Each shell command a job runs, continuation lines joined."""
    out = []
    for step in job["steps"]:
        for line in re.split(r"\n(?!\s)", step.get("run", "").replace("\\\n", " ")):
            out += [part.strip() for part in re.split(r"&&|\n", line) if part.strip()]
    return out


def pytest_invocations(job: dict) -> list[list[str]]:
    found = []
    for cmd in commands(job):
        args = shlex.split(cmd)
        if args[:3] == ["python", "-m", "pytest"]:
            found.append(args[3:])
    return found


def option_value(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def pytest_help() -> str:
    return subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], check=True,
                          capture_output=True, text=True, cwd=WORKFLOWS.parent.parent, timeout=300).stdout


@pytest.fixture(scope="module")
def markers(pytestconfig) -> set[str]:
    return {line.split(":")[0].split("(")[0].strip() for line in pytestconfig.getini("markers")}


def all_jobs():
    return [(name, job_name, job) for name in ("pr.yml", "nightly.yml") for job_name, job in load(name)["jobs"].items()]


def runs_the_harness_tests(invocation: list[str]) -> bool:
    """A pytest invocation that selects tests/ and no marker that would deselect them (they carry none)."""
    return "tests" in invocation and option_value(invocation, "-m") is None


def test_pr_runs_the_cpu_tier_with_the_ci_profile_and_uploads_the_report():
    pr = load("pr.yml")
    assert "pull_request" in pr["on"]
    invocation, _ = pytest_invocations(pr["jobs"]["cpu"])
    assert option_value(invocation, "-m") == "cpu"
    assert option_value(invocation, "--hypothesis-profile") == "conformance-ci"
    assert option_value(invocation, "--junit-xml")
    upload = [s for s in pr["jobs"]["cpu"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload and upload[0]["if"] == "always()" and "reports/parity.html" in upload[0]["with"]["path"]


@pytest.mark.parametrize("workflow, job", [("pr.yml", "cpu"), ("nightly.yml", "cpu")])
def test_workflows_that_gate_run_the_harness_tests(workflow, job):
    """`-m cpu` selects none of tests/ (they carry no tier marker), so a gate that ran only it would
    never run the planted-bug proofs."""
    assert any(runs_the_harness_tests(inv) for inv in pytest_invocations(load(workflow)["jobs"][job]))


def test_nightly_job_graph():
    nightly = load("nightly.yml")
    assert nightly["on"]["schedule"][0]["cron"] and "workflow_dispatch" in nightly["on"]
    jobs = nightly["jobs"]
    assert set(jobs) == {"cpu", "gpu", "trn1", "report"}
    assert set(jobs["report"]["needs"]) == {"cpu", "gpu", "trn1"}
    assert jobs["report"]["if"] == "always()", "an unavailable hardware job must not cancel the merge"
    for tier in ("gpu", "trn1"):
        assert "self-hosted" in jobs[tier]["runs-on"] and tier in jobs[tier]["runs-on"]
        assert jobs[tier]["continue-on-error"] is True
        (invocation,) = pytest_invocations(jobs[tier])
        assert option_value(invocation, "-m") == tier
    cpu, _ = pytest_invocations(jobs["cpu"])
    assert set(option_value(cpu, "-m").split()) - LOGIC_WORDS == {"cpu", "latency"}
    assert option_value(cpu, "--hypothesis-profile") == "conformance-nightly"
    assert any("NEURON_VENV" in c and "activate" in c for c in commands(jobs["trn1"]))


def test_every_tier_uploads_records_the_report_job_downloads():
    jobs = load("nightly.yml")["jobs"]
    (download,) = [s for s in jobs["report"]["steps"] if s.get("uses", "").startswith("actions/download-artifact")]
    pattern = re.compile(download["with"]["pattern"].replace("*", ".*"))
    for tier in ("cpu", "gpu", "trn1"):
        uploads = [s for s in jobs[tier]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
        assert uploads and uploads[0]["if"] == "always()"
        assert pattern.fullmatch(uploads[0]["with"]["name"])
        assert "reports/*.jsonl" in uploads[0]["with"]["path"]
        assert any(option_value(args, "--junit-xml") for args in pytest_invocations(jobs[tier]))


def test_report_job_runs_a_real_merge_command():
    jobs = load("nightly.yml")["jobs"]
    merges = [c for c in commands(jobs["report"]) if c.startswith("python -m gpt_conformance report merge")]
    assert merges
    args = [a for a in shlex.split(merges[0])[3:] if "${baseline" not in a]
    parsed = build_parser().parse_args(args)
    assert parsed.func is cmd_report and parsed.records[0] == "merge"
    assert build_parser().parse_args(["report", "merge", "x", "--baseline", "prev"]).baseline == ["prev"]


@pytest.mark.parametrize(("workflow", "job_name", "job"), all_jobs(), ids=lambda v: v if isinstance(v, str) else "")
def test_pytest_commands_use_registered_markers_profiles_and_options(workflow, job_name, job, markers, pytest_help):
    for args in pytest_invocations(job):
        expression = option_value(args, "-m")
        if expression:
            words = set(re.findall(r"\w+", expression)) - LOGIC_WORDS
            assert words <= markers, f"{workflow}:{job_name}: unregistered marker(s) {words - markers}"
        profile = option_value(args, "--hypothesis-profile")
        if profile:
            settings.get_profile(profile)
        for arg in args:
            option = arg.split("=", 1)[0]
            if option.startswith("--"):
                assert option in pytest_help, f"{workflow}:{job_name}: pytest has no option {option}"


def test_installs_name_extras_and_dependencies_that_exist():
    meta = metadata.metadata("gpt-conformance")
    extras = set(meta.get_all("Provides-Extra") or [])
    requirements = {re.split(r"[<>=!~; \[]", r, maxsplit=1)[0].lower() for r in meta.get_all("Requires-Dist") or []
                    if "extra ==" not in r}
    for workflow, job_name, job in all_jobs():
        for cmd in commands(job):
            for wanted in re.findall(r"\.\[([\w,-]+)\]", cmd):
                assert set(wanted.split(",")) <= extras, f"{workflow}:{job_name}: unknown extra in {cmd}"
    trn1 = load("nightly.yml")["jobs"]["trn1"]
    (deps,) = [shlex.split(c)[4:] for c in commands(trn1) if c.startswith("python -m pip install") and "-e" not in c]
    assert {d.lower() for d in deps} == requirements - {"torch"}, \
        "the trn1 job installs the project with --no-deps (to keep the Neuron venv's torch): list every other dependency"


def documented_installs(page: str, heading: str) -> list[list[str]]:
    """The ``pip install`` commands of the first bash block under ``heading`` in docs/PAGE, as argv
    lists, comments dropped."""
    text = (DOCS / page).read_text().split(f"\n{heading}\n", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if shlex.split(line, comments=True)[:2] == ["pip", "install"]]


def test_gpu_job_installs_what_the_tripy_page_says():
    """The runner keeps its own CUDA torch (a venv that sees the system site-packages, no torch
    install); everything else the page installs, the job installs, with the same arguments, and the
    package list comes from a repository variable as the trn1 job's venv does."""
    gpu = load("nightly.yml")["jobs"]["gpu"]
    documented = [args for args in documented_installs("tripy.md", "## Install") if args[2:] != ["torch"]]
    assert ["pip", "install", "nvtripy==0.1.7", "-f", "$TRIPY_PACKAGES"] in documented
    installed = [shlex.split(c)[2:] for c in commands(gpu) if c.startswith("python -m pip install")]
    assert installed == documented
    assert any(c.startswith("python3 -m venv --system-site-packages") for c in commands(gpu))
    assert "vars.TRIPY_PACKAGES" in gpu["env"]["TRIPY_PACKAGES"]
