"""Exit statuses and the exceptions the core raises; the CLI maps one to the other."""

from __future__ import annotations

import os
import re
from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # unexpected error (a bug)
    USAGE = 2  # usage or input error
    LIMIT = 3  # a limit was reached without an answer
    PROVIDER = 4  # model provider error: auth, unreachable, retries exhausted
    SANDBOX = 5  # sandbox unavailable or failed
    INTERRUPTED = 130


class RlmError(Exception):
    """Base of every error the user should see as one line, without a traceback."""

    exit_status = ExitStatus.ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(redact(message))
        self.hint = redact(hint) if hint else None


class UsageError(RlmError):
    exit_status = ExitStatus.USAGE


class InputError(RlmError):
    exit_status = ExitStatus.USAGE


class LimitReached(RlmError):
    """A budget (iterations, sub-calls, cost, tokens, wall time) ran out."""

    exit_status = ExitStatus.LIMIT

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


class ProviderError(RlmError):
    exit_status = ExitStatus.PROVIDER


class SandboxError(RlmError):
    exit_status = ExitStatus.SANDBOX


# Names of host variables whose values must never be echoed anywhere (errors, traces, sandbox).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (long enough to matter)."""
    return sorted(
        {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8},
        key=len,
        reverse=True,
    )


def redact(text: str) -> str:
    """Replace any credential value from the environment found in `text` with '***'."""
    for value in secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text
