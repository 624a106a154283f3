"""The small error hierarchy of cetopt.

Every message names the offending field (or package) and says how to fix it. The CLI maps each error class to
an exit code of docs/cli.md's vocabulary (bad input 2, a failed computation 3); tests/test_exit_codes.py lists
every class cetopt defines with its code.
"""

from __future__ import annotations


class CetoptError(Exception):
    """Base class of every error cetopt raises on purpose."""


class ProblemError(CetoptError, ValueError):
    """A problem, plan or config is malformed; the message names the field and the fix."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def reason(self) -> str:
        """The message without the field prefix."""
        text = str(self)
        prefix = f"{self.field}: " if self.field else ""
        return text[len(prefix):] if text.startswith(prefix) else text

    def under(self, parent: str) -> "ProblemError":
        """The same error with its field path nested under ``parent`` (e.g. ``layers[3]``)."""
        if self.field is None:
            path = parent
        elif self.field.startswith("["):
            path = f"{parent}{self.field}"
        else:
            path = f"{parent}.{self.field}"
        return ProblemError(self.reason, field=path)


class SolverOptionError(CetoptError, ValueError):
    """A solver name, config file or option is unknown or has the wrong type."""


class SolverUnavailableError(CetoptError):
    """A backend needs a package that is not installed; the message gives the install command."""


class UnsupportedProblemError(CetoptError):
    """A backend cannot take this problem (e.g. interaction terms); the message says what it lacks."""

    def __init__(self, solver: str, reasons: list[str]) -> None:
        self.solver = solver
        self.reasons = list(reasons)
        joined = "; ".join(reasons)
        super().__init__(f"solver '{solver}' cannot solve this problem: {joined}")
