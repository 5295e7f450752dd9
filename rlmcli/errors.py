"""How a run can end: exit statuses, exit reasons (each carrying its status), and the exceptions
the core raises (each declaring its reason). The CLI maps an outcome to a status through its reason."""

from __future__ import annotations

import os
import re
from enum import IntEnum, StrEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # unexpected error (a bug)
    USAGE = 2  # usage or input error
    LIMIT = 3  # a limit was reached without an answer
    PROVIDER = 4  # model provider error: auth, unreachable, retries exhausted
    SANDBOX = 5  # sandbox unavailable or failed
    INVALID = 6  # the answer failed validation (--schema, --cite require) after its repair turn
    INTERRUPTED = 130


class ExitReason(StrEnum):
    """Why a run ended. The values are what `--json` (`exit_reason`), the history, traces and bench
    results say: users' scripts match on them, so they never change."""

    FINAL = "final"
    MAX_ITERATIONS = "max_iterations"
    MAX_SUBCALLS = "max_subcalls"
    MAX_COST = "max_cost"
    MAX_TOKENS = "max_tokens"
    TIMEOUT = "timeout"
    USAGE_ERROR = "usage_error"
    INPUT_ERROR = "input_error"
    PROVIDER_ERROR = "provider_error"
    SANDBOX_ERROR = "sandbox_error"
    INTERRUPTED = "interrupted"
    ERROR = "error"  # unexpected: a bug
    INVALID_ANSWER = "invalid_answer"  # --schema / --cite require: still invalid after one repair turn

    @property
    def status(self) -> ExitStatus:
        return _STATUS[self]

    @property
    def is_limit(self) -> bool:
        """A budget ran out: the run stopped with its best partial answer."""
        return self.status == ExitStatus.LIMIT

    @property
    def is_error(self) -> bool:
        """The machinery failed (a bug, the user's input, the provider, the sandbox), as opposed to
        an answer, a limit or an interruption."""
        return self.status in (ExitStatus.ERROR, ExitStatus.USAGE, ExitStatus.PROVIDER, ExitStatus.SANDBOX)

    @classmethod
    def parse(cls, text: object) -> ExitReason:
        """The reason a stored string names. Records written by older versions may hold names that
        are no longer made ("internal_error", or "<class>_error" of an error subclass); they were
        all failures of the machinery, so they read as ERROR."""
        try:
            return cls(text)
        except ValueError:
            return cls.ERROR


_STATUS: dict[ExitReason, ExitStatus] = {
    ExitReason.FINAL: ExitStatus.OK,
    ExitReason.MAX_ITERATIONS: ExitStatus.LIMIT,
    ExitReason.MAX_SUBCALLS: ExitStatus.LIMIT,
    ExitReason.MAX_COST: ExitStatus.LIMIT,
    ExitReason.MAX_TOKENS: ExitStatus.LIMIT,
    ExitReason.TIMEOUT: ExitStatus.LIMIT,
    ExitReason.USAGE_ERROR: ExitStatus.USAGE,
    ExitReason.INPUT_ERROR: ExitStatus.USAGE,
    ExitReason.PROVIDER_ERROR: ExitStatus.PROVIDER,
    ExitReason.SANDBOX_ERROR: ExitStatus.SANDBOX,
    ExitReason.INVALID_ANSWER: ExitStatus.INVALID,
    ExitReason.INTERRUPTED: ExitStatus.INTERRUPTED,
    ExitReason.ERROR: ExitStatus.ERROR,
}

# LimitReached.limit (the budget that ran out) -> the reason the run ends with.
LIMIT_REASONS: dict[str, ExitReason] = {
    "iterations": ExitReason.MAX_ITERATIONS,
    "subcalls": ExitReason.MAX_SUBCALLS,
    "cost": ExitReason.MAX_COST,
    "tokens": ExitReason.MAX_TOKENS,
    "timeout": ExitReason.TIMEOUT,
}


class RlmError(Exception):
    """Base of every error the user should see as one line, without a traceback. Each subclass
    declares the reason a run ends with when it raises one; the exit status follows from it."""

    reason: ExitReason = ExitReason.ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(redact(message))
        self.hint = redact(hint) if hint else None

    @property
    def exit_status(self) -> ExitStatus:
        return self.reason.status


class UsageError(RlmError):
    reason = ExitReason.USAGE_ERROR


class InputError(RlmError):
    reason = ExitReason.INPUT_ERROR


class LimitReached(RlmError):
    """A budget ran out: `limit` names it ("iterations", "subcalls", "cost", "tokens", "timeout")."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit
        self.reason = LIMIT_REASONS[limit]  # an unknown limit is a bug, found where it is raised


class ProviderError(RlmError):
    reason = ExitReason.PROVIDER_ERROR


class SandboxError(RlmError):
    reason = ExitReason.SANDBOX_ERROR


# Names of host variables whose values must never be echoed anywhere (errors, traces, sandbox).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (long enough to matter).

    Every event and error line is redacted, several per iteration: the scan is redone only when the
    environment changed (a copy of it compares in microseconds; the scan took ~0.3 ms)."""
    global _scanned
    environ = dict(os.environ._data if hasattr(os.environ, "_data") else os.environ)  # raw: no decoding
    if _scanned is None or _scanned[0] != environ:
        values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}
        _scanned = (environ, sorted(values, key=len, reverse=True))
    return list(_scanned[1])


_scanned: tuple[dict, list[str]] | None = None  # (the environment scanned, its secret values)


def redact(text: str) -> str:
    """Replace any credential value from the environment found in `text` with '***'."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text
