"""Collection makes only the items that can run: a case gets a test for the targets it applies
to (``applies_to``), and ``-m`` leaves out the targets of unselected tiers before their items are
made, without ever dropping an item ``-m`` would have kept."""

import pytest
from gpt_conformance.harness.api import Requirements, Target, registry
from gpt_conformance.harness.pytest_plugin.collection import tier_may_be_selected

from tests.runner import ROOT

pytest_plugins = ["pytester"]


def collected(result) -> list[str]:
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def test_a_case_gets_items_only_for_the_targets_it_applies_to(pytester, tmp_path):
    pytester.makepyfile("""
        import pytest
        from gpt_conformance.harness.core.targets import applies_to

        pytestmark = pytest.mark.gpt_conformance  # only conformance tests are parametrized over targets

        @applies_to(lambda target: target.name == "eager")
        def test_eager_only(target):
            pass

        @applies_to(lambda target: False)
        @pytest.mark.parametrize("n", [1, 2])
        def test_for_no_target(target, n):
            pass

        def test_every_target(target):
            pass
    """)
    result = pytester.runpytest_inprocess("--co", "-q", "-m", "cpu", f"--report-dir={tmp_path}")
    items = collected(result)
    assert [i for i in items if i.startswith("test_eager_only")] == ["test_eager_only[eager]"]
    assert not [i for i in items if i.startswith("test_for_no_target")]  # no "empty parameter set" skip either
    assert {"test_every_target[eager]", "test_every_target[export]"} <= set(items)


def targets_per_test(pytester, tmp_path, path: str) -> dict[str, set[str]]:
    result = pytester.runpytest_inprocess(str(ROOT / path), "--co", "-q", "-m", "cpu", f"--report-dir={tmp_path}")
    names = sorted(registry.names(), key=len, reverse=True)  # the longest first: "eager-fp16" before "eager"
    targets: dict[str, set[str]] = {}
    for item in collected(result):
        test, params = item.rstrip("]").split("[", 1)
        targets.setdefault(test, set()).add(next(n for n in names if params == n or params.startswith(n + "-")))
    return targets


def test_the_low_precision_checks_are_made_only_for_low_precision_targets(pytester, tmp_path):
    targets = targets_per_test(pytester, tmp_path, "cases/test_precision.py")
    quantized = {"modelopt-int8-wo", "modelopt-int4-wo", "torchao-int8-wo", "torch-int4-wo"}
    assert targets["test_arithmetic"] == quantized  # eager-fp16 is its own reference
    assert targets["test_quality"] == {"eager-fp16", "eager-bf16"} | quantized


def test_the_decode_cases_are_made_only_for_targets_with_a_decoder_and_the_others_get_one_skip(pytester, tmp_path):
    targets = targets_per_test(pytester, tmp_path, "cases/test_decode_path.py")
    cpu = {t.name for t in registry if t.marker == "cpu" and "slow" not in t.marks}  # -m cpu, no --slow
    decoders = {t.name for t in registry if t.marker == "cpu" and t.capabilities.decode is not None}
    assert {"eager", "export"} <= decoders < cpu
    without = targets.pop("test_without_a_decoder")
    assert without == cpu - decoders
    assert targets and all(names == decoders for names in targets.values()), targets
    latency = targets_per_test(pytester, tmp_path, "cases/test_latency.py")
    assert latency["test_prefill_latency"] == latency["test_decode_step_latency"] == decoders


class Fake(Target):
    def __init__(self, device: str):
        self.name = f"fake-{device}"
        self.requirements = Requirements(device=device)


@pytest.mark.parametrize("markexpr, kept", [
    ("", {"cpu", "cuda", "neuron"}),
    ("cpu", {"cpu"}),
    ("gpu", {"cuda"}),
    ("not gpu", {"cpu", "neuron"}),
    ("cpu and not slow", {"cpu"}),
    ("cpu or gpu", {"cpu", "cuda"}),
    ("gpu or slow", {"cpu", "cuda", "neuron"}),  # a slow test of any target is selected
    ("not slow", {"cpu", "cuda", "neuron"}),
    ("(gpu)", {"cuda"}),
    ("not (cpu or trn1)", {"cuda"}),
    ("slow(reason=1)", {"cpu", "cuda", "neuron"}),  # keyword arguments: left to pytest
])
def test_only_targets_of_unselected_tiers_are_left_out(markexpr, kept):
    assert {d for d in ("cpu", "cuda", "neuron") if tier_may_be_selected(markexpr, Fake(d))} == kept


def gpt2_sized(pytester, tmp_path, *args) -> list[str]:
    result = pytester.runpytest_inprocess(str(ROOT / "cases"), "--co", "-q", "-m", "cpu", f"--report-dir={tmp_path}",
                                          *args)
    return [item for item in collected(result) if "gpt2-124m" in item or "gpt2-small" in item]


def test_gpt2_sized_shapes_run_nightly_and_slow_runs_keep_one_parity_case(pytester, tmp_path):
    assert gpt2_sized(pytester, tmp_path) == []  # slow: not in a plain -m cpu
    assert gpt2_sized(pytester, tmp_path, "--slow") == ["test_logits_parity[export-gpt2-124m-shape]"]
    nightly = gpt2_sized(pytester, tmp_path, "--nightly")
    assert {"test_logits_parity[eager-gpt2-124m-shape]", "test_loss_parity[export-strict-gpt2-124m-shape]",
            "test_arithmetic[modelopt-int8-wo-gpt2-124m-shape]",
            "test_forward_latency[eager-gpt2-small-1x128]"} <= set(nightly), nightly


def test_two_tests_of_one_id_are_a_usage_error_naming_their_targets(pytester, tmp_path):
    # eager on case "fp16-x" and eager-fp16 on case "x" are both [eager-fp16-x]: pytest-xdist would
    # run one of them and drop the other without a word.
    pytester.makepyfile("""
        import pytest

        pytestmark = pytest.mark.gpt_conformance

        @pytest.mark.parametrize("case", ["fp16-x", "x"])
        def test_case(target, case):
            pass
    """)
    result = pytester.runpytest_inprocess("--co", "-q", "-m", "cpu", f"--report-dir={tmp_path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_case[[]eager-fp16-x[]] (targets eager and eager-fp16)*rename one of the targets"])


def test_the_shipped_tests_have_one_id_each(pytester, tmp_path):
    result = pytester.runpytest_inprocess(str(ROOT / "cases"), "--co", "-q", f"--report-dir={tmp_path}")
    assert result.ret == pytest.ExitCode.OK
    items = collected(result)
    assert len(items) == len(set(items)) > 1000
