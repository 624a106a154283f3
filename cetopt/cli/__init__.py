"""The ``cetopt`` command line: one module per family of subcommands (problems, models, reports), shared
argument helpers in :mod:`cetopt.cli.args`.

Exit codes: 0 success; 1 infeasible or no solution (the message gives the smallest feasible budget); 2 bad input
(problem, model, option, config, a plan or problem of other weights: the message names the field and the fix); 3 a computation failed (NaN/inf
curvature, a diverging eigen-solver); 130 interrupted.
Results go to stdout (``--format json``, on every command, prints exactly one JSON document); logs and progress go
to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from cetopt import __version__
from cetopt.cli import models, output, plan, problems, reports
from cetopt.cli.args import EXIT_BAD_INPUT, EXIT_FAILED
from cetopt.errors import CetoptError, ProblemError, SolverOptionError, SolverUnavailableError, \
    UnsupportedProblemError
from cetopt.fingerprint import FingerprintMismatchError

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cetopt", description="Curvature-driven per-layer compression plans, "
                                     "solved by swappable backends, with certificates (README.md, docs/cli.md).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the free cores, i.e. cores minus "
                        "the load average, split among torchrun ranks on this machine)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc malloc as it is (by default freed memory stays in the process: large "
                             "activations stop costing page faults; cetopt.curvature.allocator)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (problems, models, plan, reports):
        module.add_parsers(sub)
    for command in sub.choices.values():  # the global options are accepted after the subcommand too
        _add_global_options(command)
        output.add_format_flag(command)  # --format json on every command
    return parser


def _add_global_options(command: argparse.ArgumentParser) -> None:
    """``cetopt solve --threads 2 ...`` as well as ``cetopt --threads 2 solve ...``: SUPPRESS keeps the value
    given before the subcommand when the option is not repeated after it."""
    known = {opt for action in command._actions for opt in action.option_strings}
    if "--threads" not in known:
        command.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                             help="torch CPU threads (also accepted before the subcommand)")
    if "--verbose" not in known and "-v" not in known:
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if "--system-malloc" not in known:
        command.add_argument("--system-malloc", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


_TORCH_FREE = {"solve", "compare", "solvers", "validate", "schema", "make-problem"}


def _configure_torch(args: argparse.Namespace) -> None:
    """--threads (or the free-core default) and progress bars, for commands that run torch."""
    if args.threads is not None and args.threads < 1:
        raise ProblemError(f"must be >= 1, got {args.threads}", field="--threads")
    if args.command in _TORCH_FREE and args.threads is None:
        return
    from cetopt.curvature.allocator import keep_freed_memory
    from cetopt.curvature.progress import configure_progress
    from cetopt.curvature.threads import configure_threads

    if not args.system_malloc:
        keep_freed_memory()
    configure_threads(args.threads)
    configure_progress(enabled=True)  # phase bars on stderr at the default verbosity (after a few seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if isinstance(getattr(args, "model", None), str):  # an unknown model is refused before torch loads
            from cetopt.modelspec import check_target

            check_target(args.model)
        _configure_torch(args)
        return output.run(args, args.func)
    except (ProblemError, SolverOptionError, UnsupportedProblemError, SolverUnavailableError,
            FingerprintMismatchError) as err:  # a plan or problem of other weights is bad input, not a failure
        print(f"cetopt: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CetoptError as err:  # a computation failed (e.g. CurvatureError: NaN curvature), not the input
        print(f"cetopt: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("cetopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cetopt solve ... | head`: stdout closed early
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        print("cetopt: error: output pipe closed before the result was written", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # unwritable --out, full disk, unreadable file: the path and the reason
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        print(f"cetopt: error: cannot read or write{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def entry(argv: Sequence[str] | None = None) -> int:
    """The ``cetopt`` command: :func:`main`, and an exception nothing expected (out of memory, a bug) ends as a
    failed computation (exit 3) with a one-line message, never as Python's exit 1, which means "infeasible".
    Calling :func:`main` itself lets such an exception through, with its traceback, as a library call should."""
    try:
        return main(argv)
    except Exception as err:  # noqa: BLE001  the last line of defence of the command, not of the library
        logging.getLogger("cetopt").debug("unexpected error", exc_info=True)
        print(f"cetopt: error: the command failed unexpectedly ({type(err).__name__}: {err}); this is a resource "
              "limit (e.g. out of memory) or a bug: rerun with --verbose for the traceback and report it",
              file=sys.stderr)
        return EXIT_FAILED


__all__ = ["build_parser", "entry", "main"]
