"""The project's one exception tree.

::

    AutoapproveError
    ├── PolicyError              a policy or policy-test file is not acceptable (carries file:line:col)
    ├── InputError               an enrollments file, CLI value or setting is not acceptable
    ├── EvaluationError          one enrollment could not be evaluated (carries rule and enrollment)
    ├── ApiError                 the Flip API answered with an error or could not be reached
    │   ├── ApiAuthError         401/403: the key is missing, wrong or not allowed
    │   ├── ApiRetryableError    connection errors, timeouts, 429 and 5xx after the retry budget
    │   └── ApiResponseError     the answer could not be parsed (malformed or truncated body)
    ├── StoreError               the decision store failed
    │   └── LockHeldError        another run holds this program's lock (or our lease was lost)
    └── RunAborted               a live run refused to apply anything (circuit breaker)

Library code raises these; only ``cli.py`` turns them into messages and exit codes.
Third-party errors are wrapped with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AutoapproveError(Exception):
    """Base of every error this project raises on purpose."""


@dataclass(frozen=True)
class SourceLocation:
    """Where in a file a problem is: 1-based line and column."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.path
        return f"{self.path}:{self.line}:{self.column or 1}"


@dataclass(frozen=True)
class Problem:
    """One finding about a policy file: an error or a warning."""

    location: SourceLocation
    message: str
    severity: str = "error"  # "error" | "warning"
    suggestion: str | None = None

    def __str__(self) -> str:
        hint = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        return f"{self.location}: {self.severity}: {self.message}{hint}"


class PolicyError(AutoapproveError):
    """A policy (or policy test) file could not be loaded; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def at(cls, path: str, message: str, line: int | None = None, column: int | None = None) -> PolicyError:
        return cls([Problem(SourceLocation(path, line, column), message)])


class InputError(AutoapproveError):
    """Bad input that is not a policy: an enrollments file, a CLI value, a setting."""


class EvaluationError(AutoapproveError):
    """One enrollment could not be evaluated; the run records it and goes on."""

    def __init__(self, message: str, *, rule_id: str | None = None, enrollment_id: str | None = None) -> None:
        self.rule_id = rule_id
        self.enrollment_id = enrollment_id
        super().__init__(message)


class ApiError(AutoapproveError):
    """The Flip API answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        detail: list[dict[str, Any]] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.detail = detail or []
        self.errors = errors or []
        super().__init__(message)

    def locations(self) -> list[Any]:
        """Where the API says the problem is (``detail[].loc``, ``errors[].path``).

        Never the API's free-text messages: they may quote personal data.
        """
        found: list[Any] = []
        for item in self.detail:
            loc = item.get("loc") if isinstance(item, dict) else None
            if isinstance(loc, list):
                found.append([part if isinstance(part, int) else str(part) for part in loc])
        for item in self.errors:
            path = item.get("path") if isinstance(item, dict) else None
            if path is not None:
                found.append(str(path))
        return found


class ApiAuthError(ApiError):
    """401 or 403: the run must stop at once."""


class ApiRetryableError(ApiError):
    """A transient failure that outlived the retry budget (or a wait that was too long)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class ApiResponseError(ApiError):
    """The answer arrived but could not be understood (malformed, truncated, wrong shape)."""


class StoreError(AutoapproveError):
    """The decision store failed."""


class LockHeldError(StoreError):
    """Another run holds this program's lock, or this run's lease was taken over."""


class RunAborted(AutoapproveError):
    """A live run applied nothing because a safety limit was exceeded."""
