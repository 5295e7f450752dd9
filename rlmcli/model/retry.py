"""When a failed model call is retried, how long to wait, and how the failure reads to the user.

Shared by both call paths (litellm, and the direct OpenAI-protocol path of openai_http.py): they
raise different exception classes, so failures are classified by HTTP status and by name.
"""

from __future__ import annotations

import email.utils
import http
import random
import re
import time
from typing import Any

from ..errors import ProviderError, redact

BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0  # a server asking for longer than this is effectively down
RETRYABLE_STATUS = {408, 409, 425, 429}  # plus every 5xx
ERROR_DETAIL_CHARS = 200


def status_of(e: BaseException) -> int | None:
    status = getattr(e, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(e: BaseException) -> bool:
    status = status_of(e)
    if status is not None:
        return status in RETRYABLE_STATUS or status >= 500
    # No HTTP status: connection failures and timeouts from any layer (openai, httpx, asyncio).
    names = {cls.__name__ for cls in type(e).__mro__}
    return bool(
        names
        & {
            "APIConnectionError",
            "APITimeoutError",
            "Timeout",
            "TimeoutError",
            "TransportError",
            "ConnectionError",
            "JSONDecodeError",
            # the direct path (openai_http): aiohttp's connection errors, a 2xx that isn't JSON
            "ClientConnectionError",
            "ClientPayloadError",
            "ResponseFormatError",
        }
    )


def response_headers(e: BaseException) -> Any:
    """Where litellm keeps the provider's response headers on an exception.

    `litellm_response_headers` is set by litellm's exception mapping; `e.response` is rebuilt by
    some exception classes (RateLimitError) and may have lost the original headers.
    """
    for headers in (
        getattr(e, "litellm_response_headers", None),
        getattr(getattr(e, "response", None), "headers", None),
        getattr(e, "headers", None),
    ):
        if headers:
            return headers
    return {}


def retry_after(e: BaseException) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, then `retry-after`), if any."""
    headers = response_headers(e)
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:  # HTTP-date form
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, AttributeError):
        return None


def delay(e: BaseException, attempt: int, base: float) -> float:
    server = retry_after(e)
    if server is not None:
        return min(server, RETRY_AFTER_CAP_S)
    ceiling = min(BACKOFF_CAP_S, base * 2 ** (attempt - 1))
    # "Equal jitter": at least half the exponential step, so retries spread without collapsing to 0.
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def detail(e: BaseException) -> str:
    """The provider's own message, without litellm's class-name prefixes, on one short line."""
    text = str(getattr(e, "message", None) or e) or type(e).__name__
    text = re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?", "", text.strip())
    if "Expecting value: line 1 column 1" in text:
        text = "the response was not valid JSON"
    text = " ".join(text.split())
    return text[:ERROR_DETAIL_CHARS] + ("..." if len(text) > ERROR_DETAIL_CHARS else "")


def provider_error(model: str, e: BaseException, attempts: int, suffix: str = "") -> ProviderError:
    status = status_of(e)
    if status is not None:
        try:
            what = f"{status} {http.HTTPStatus(status).phrase}"
        except ValueError:
            what = str(status)
    else:
        what = type(e).__name__
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    hint = None
    if status in (401, 403):
        provider = model.split("/", 1)[0].upper() if "/" in model else "the provider's"
        hint = f"check the API key ({provider}_API_KEY or --api-base for a local server)"
    elif status == 404:
        hint = f"check the model name {model!r} and the API base URL"
    message = f"model provider error: {model}: {what}{tries}: {detail(e)}{suffix}"
    if hint:  # in the message itself: it is the one line the user sees
        message += f" ({hint})"
    return ProviderError(redact(message))
