"""One parity check as a plain script, the yardstick of ``bench_tiers.py --tier one-check``.

What ``pytest cases/test_parity.py --target export -k "nanochat-seed and loss"`` checks, without
pytest, the session or the program cache: the case's golden, the model wrapped by
``torch.func.functional_call`` and traced by ``torch.export`` (non-strict, dynamic batch and
sequence: ``targets/capture.py``'s ``trace``, called directly), and the loss compared with the fp64
golden's under the same bound shape (multiplier x eager's error + floor). Exits 1 if it does not hold.

    python benchmarks/plain_check.py [CASE]
"""

from __future__ import annotations

import sys

import torch
from gpt_conformance.reference.cases import ALL_CASES
from gpt_conformance.reference.goldens import load_golden
from gpt_conformance.targets.capture import parameters_of, trace


def main(case: str = "nanochat-seed") -> int:
    spec = next(s for s in ALL_CASES if s.name == case)
    golden = load_golden(spec)
    model = golden.model.eval()
    params = parameters_of(model)
    program = trace(False, model, "forward")  # torch.export of the functional_call wrapper, nothing cached
    with torch.no_grad():
        _, loss = program.module()(params, golden.idx, golden.targets)
    error = abs(float(loss) - float(golden.loss64))
    bound = 3 * abs(float(golden.loss32) - float(golden.loss64)) + 1e-6
    print(f"{case} loss: |export - fp64| = {error:.3g}, bound {bound:.3g}")
    return 0 if error <= bound else 1


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
