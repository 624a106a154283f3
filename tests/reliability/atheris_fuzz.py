"""Coverage-guided fuzzing of the problem and plan loaders with atheris (libFuzzer), when it installs.

    python tests/reliability/atheris_fuzz.py -runs=100000

Any exception other than a CetoptError is a crash (libFuzzer stops and writes the input to crash-*).
tests/reliability/test_fuzz.py runs it briefly when atheris is importable.
"""

from __future__ import annotations

import sys

import atheris
import networkx  # noqa: F401  (dependencies load uninstrumented: instrumenting them takes minutes)
import numpy  # noqa: F401

with atheris.instrument_imports(include=["cetopt"]):
    from cetopt.errors import CetoptError
    from cetopt.problem.io import parse_problem_json
    from cetopt.quant.plan import Plan


def one_input(data: bytes) -> None:
    for parse in (parse_problem_json, Plan.from_json):
        try:
            parse(data)
        except CetoptError:
            pass


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
