"""The pytest plugin as users meet it: tiers, target selection, corrupt goldens, exit codes, options
from any directory, bad options rejected at start."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from gpt_conformance.harness.checks.properties import REPRO_TEST
from gpt_conformance.harness.checks.strategies import named_example
from gpt_conformance.harness.pytest_plugin import validate
from gpt_conformance.harness.pytest_plugin.path_options import PATH_OPTIONS
from gpt_conformance.reference.cases import NAMED_CASES
from gpt_conformance.reference.checkpoint import GPT2_DIR_ENV
from gpt_conformance.reference.goldens import GOLDEN_DIR

from tests.runner import ROOT, run_pytest, statuses

pytest_plugins = ["pytester"]


@pytest.mark.parametrize("tier, reason", [("gpu", "no CUDA device"), ("trn1", "no Neuron device")])
def test_hardware_tier_without_hardware_skips_with_reason_and_exits_0(tmp_path, tier, reason):
    proc, _, _ = run_pytest("-m", tier, "-rs", report_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" in proc.stdout and "passed" not in proc.stdout.splitlines()[-1]
    assert reason in proc.stdout


def test_unknown_target_is_a_usage_error(tmp_path):
    proc, _, _ = run_pytest("--target", "no-such-backend", report_dir=tmp_path)
    assert proc.returncode == 4
    assert "unknown target; registered:" in proc.stderr and "'eager'" in proc.stderr


def test_list_targets_exits_0(tmp_path):
    proc, _, _ = run_pytest("--list-targets", report_dir=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "eager" in proc.stdout and "can run here" in proc.stdout


def test_corrupt_golden_is_an_error_not_a_pass_nor_regenerated(tmp_path):
    goldens = tmp_path / "goldens"
    shutil.copytree(GOLDEN_DIR, goldens, ignore=shutil.ignore_patterns("gpt2-*"))
    meta = json.loads((goldens / "seed.json").read_text())
    meta["sha256"] = "0" * 64
    (goldens / "seed.json").write_text(json.dumps(meta))
    before = (goldens / "seed.safetensors").read_bytes()
    proc, records, _ = run_pytest("cases/test_parity.py", "-k", "seed", "--target", "eager", f"--golden-dir={goldens}",
                                  report_dir=tmp_path / "records")
    assert proc.returncode == 1
    got = statuses(records)
    assert got[("eager", "seed")] == "error"
    assert "golden for 'seed' unusable" in proc.stdout and "is corrupt" in proc.stdout
    assert (goldens / "seed.safetensors").read_bytes() == before
    assert json.loads((goldens / "seed.json").read_text())["sha256"] == "0" * 64


# --- options, wherever pytest starts -----------------------------------------------------------
EAGER_SEED = ("-m", "cpu", "--target", "eager", "-k", "seed and (logits_parity or loss_parity)")


def copy_goldens(directory: Path) -> Path:
    shutil.copytree(GOLDEN_DIR, directory, ignore=shutil.ignore_patterns("gpt2-*"))
    return directory


def assert_project_config(proc) -> None:
    """pytest read the project's pyproject.toml: rootdir is the checkout, markers are registered."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert f"rootdir: {ROOT}\n" in proc.stdout and "configfile: pyproject.toml" in proc.stdout
    assert "PytestUnknownMarkWarning" not in proc.stdout


def test_existing_dirs_outside_the_checkout_given_as_option_values_work_twice_in_a_row(tmp_path):
    # An existing directory given --opt=VALUE is never taken for a test path: pytest reads
    # pyproject.toml (run_pytest's -q hides the header that names rootdir; -v cancels it).
    report_dir, goldens = tmp_path / "records", copy_goldens(tmp_path / "goldens")
    report_dir.mkdir()
    for run in (1, 2):
        proc, records, _ = run_pytest(*EAGER_SEED, "-v", f"--golden-dir={goldens}", report_dir=report_dir)
        assert_project_config(proc)
        assert len(records) == 4 * run and {r["status"] for r in records} == {"pass"}


@pytest.mark.parametrize("option", PATH_OPTIONS)
def test_a_path_option_given_after_a_space_is_a_usage_error_saying_what_to_write(tmp_path, option):
    """pytest would take the value for a test path and root the run there (path_options.py)."""
    proc, records, _ = run_pytest(*EAGER_SEED, option, str(tmp_path), report_dir=tmp_path / "records")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout[-3000:] + proc.stderr
    assert [line for line in proc.stderr.splitlines() if line] == [
        f"ERROR: {option} {tmp_path}: write {option}={tmp_path} (pytest takes a path given after a space for a "
        "test path, and would root the run there)"]
    assert records == [] and not (tmp_path / "records").exists()


def test_options_work_from_another_directory(tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc, records, _ = run_pytest(str(ROOT / "cases" / "test_parity.py"), "-k", "seed", "--target", "eager", "-v",
                                  report_dir=tmp_path / "records", cwd=cwd)
    assert_project_config(proc)
    assert len(records) == 4 and {r["status"] for r in records} == {"pass"}


@pytest.mark.slow
def test_report_dir_works_with_xdist_and_every_worker_writes_the_run_of_the_controller(tmp_path):
    report_dir = tmp_path / "records"
    report_dir.mkdir()
    proc, records, _ = run_pytest(*EAGER_SEED, "-n", "2", "-v", report_dir=report_dir)
    assert_project_config(proc)
    assert len(records) == 4 and {r["status"] for r in records} == {"pass"}
    assert len({r["run_id"] for r in records}) == 1  # through xdist's workerinput, not the environment
    assert {p.name.rsplit("-", 1)[1] for p in report_dir.glob("records-*.jsonl")} == {"gw0.jsonl", "gw1.jsonl"}


def test_repro_file_replays_the_example(tmp_path):
    model_case, inp = named_example(NAMED_CASES[0])
    example = tmp_path / "example.json"
    example.write_text(json.dumps({"target": "eager", "model": model_case.to_dict(), "input": inp.to_dict()}))
    proc, records, _ = run_pytest(f"{REPRO_TEST}[eager]", "--target", "eager", f"--repro-file={example}",
                                  report_dir=tmp_path / "records")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr
    assert {r["check"] for r in records} >= {"property-parity-logits", "causality"}


# --- bad options: one line, exit code 4, before anything is collected or computed ---------------
def bad_options(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """{case: (arguments, what the one error line must say)}; ``tmp_path/a-file`` is a file."""
    a_file = tmp_path / "a-file"
    return {
        "report dir under a file": ([f"--report-dir={a_file}/records"],
                                    f"cannot write records to {a_file}/records: Not a directory"),
        "repro not JSON": (["--repro={not json", "-m", "cpu"], "--repro: not a property example (JSONDecodeError: "),
        "repro @file": (["--repro=@/nonexistent/example.json"],
                        "--repro takes the JSON itself; for a file use --repro-file=/nonexistent/example.json"),
        "repro file missing": (["--repro-file=/nonexistent/example.json"],
                               "--repro-file /nonexistent/example.json: No such file or directory"),
        "repro file not JSON": ([f"--repro-file={a_file}"], f"--repro-file {a_file}: not a property example"),
        "repro twice": ([f"--repro-file={a_file}", "--repro={}"], "--repro and --repro-file: give one"),
        "gpt2 dir without --slow": ([f"--gpt2-dir={tmp_path}"],
                                    f"--gpt2-dir {tmp_path}: the GPT-2 greedy cases are slow"),
        "gpt2 dir missing": (["--gpt2-dir=/nonexistent", "--slow"], "--gpt2-dir /nonexistent: not a directory"),
        "golden dir missing": (["--golden-dir=/nonexistent"], "--golden-dir /nonexistent: not a directory"),
        "golden dir unwritable": ([f"--golden-dir={a_file}/goldens", "--update-goldens"],
                                  f"cannot write goldens to {a_file}/goldens: Not a directory"),
        "peak flops of an unknown device": (["--peak-flops", "tpu=1e12"],
                                            "unknown device kind 'tpu'; known: cpu, cuda, neuron"),
        "no torch threads": (["--torch-threads=0"], "--torch-threads '0': expected a positive number of threads"),
    }


@pytest.mark.parametrize("case", list(bad_options(Path("/tmp"))))
def test_bad_option_is_one_line_usage_error_before_collection(pytester, tmp_path, case):
    (tmp_path / "a-file").write_text("{not json")
    args, message = bad_options(tmp_path)[case]
    pytester.makepyfile("open('collected', 'w').close()\n\ndef test_anything():\n    pass\n")
    result = pytester.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line]
    assert len(errors) == 1 and errors[0].startswith("ERROR: ") and message in errors[0], result.errlines
    assert "Traceback" not in "\n".join(result.outlines + result.errlines)
    assert not (pytester.path / "collected").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_read_only_report_dir_is_a_usage_error(pytester, tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    result = pytester.runpytest_inprocess(f"--report-dir={read_only}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: cannot write records to {read_only}: Permission denied" in result.errlines


def test_report_dir_on_a_read_only_filesystem_is_a_usage_error(tmp_path, monkeypatch):
    # As root, no directory is read-only to us; a read-only mount is what stops root.
    def read_only_filesystem(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(validate.tempfile, "TemporaryFile", read_only_filesystem)
    with pytest.raises(pytest.UsageError, match=f"^cannot write records to {tmp_path}: Read-only file system$"):
        validate.writable_dir(tmp_path, "records")


@pytest.mark.parametrize("args", [["--slow"], ["-m", "slow"]])
def test_gpt2_dir_with_the_slow_tests_or_from_the_environment_is_accepted(pytester, monkeypatch, tmp_path, args):
    assert pytester.runpytest_inprocess(f"--gpt2-dir={tmp_path}", *args).ret == pytest.ExitCode.NO_TESTS_COLLECTED
    monkeypatch.setenv(GPT2_DIR_ENV, str(tmp_path))  # a standing default: no error in runs without the slow tests
    assert pytester.runpytest_inprocess().ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_recorded_test_is_shown_as_recorded_not_passed(tmp_path):
    # eager-bf16's logits on `scaled` are outside the policy's calibration and bf16 has no loss gate:
    # both are recorded; its logits on `seed` are judged and pass.
    run = run_pytest("cases/test_parity.py", "--target", "eager-bf16", "-k",
                     "eager-bf16-seed or eager-bf16-scaled", report_dir=tmp_path / "reports")
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    found = {(r["check"], r["case"]): r["status"] for r in run.records}
    assert found == {("logits", "seed"): "pass", ("logits", "scaled"): "recorded",
                     ("loss", "seed"): "recorded", ("loss", "scaled"): "recorded"}, found
    progress = next(line for line in run.proc.stdout.splitlines() if line.endswith("[100%]"))
    assert progress.split()[0] == ".RRR", progress
    assert "1 passed" in run.proc.stdout and "3 recorded" in run.proc.stdout, run.proc.stdout


def test_conformance_tests_run_with_the_torch_threads_asked_for_and_torch_is_put_back(pytester, tmp_path):
    # Default (auto), serial: torch's own choice; an xdist worker's auto is one thread (next test).
    pytester.makepyfile('''
        import pathlib
        import pytest
        import torch

        pytestmark = pytest.mark.gpt_conformance

        def test_threads():
            pathlib.Path("threads").write_text(str(torch.get_num_threads()))
    ''')
    before = torch.get_num_threads()
    for args, expected in (((), before), (("--torch-threads=3",), 3), (("--torch-threads=1",), 1)):
        result = pytester.runpytest_inprocess(f"--report-dir={tmp_path / 'reports'}", *args)
        assert result.ret == pytest.ExitCode.OK, result.outlines
        assert int((pytester.path / "threads").read_text()) == expected, args
        assert torch.get_num_threads() == before, args


def test_auto_torch_threads_is_one_per_xdist_worker_and_torchs_own_choice_otherwise(monkeypatch):
    class Config:
        def getoption(self, name):
            assert name == "torch_threads"
            return "auto"

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert validate.torch_threads(Config()) is None
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert validate.torch_threads(Config()) == 1
