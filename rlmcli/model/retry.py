"""When a failed model call is retried, how long to wait, and how the failure reads to the user.

Shared by both call paths (litellm, and the direct OpenAI-protocol path of openai_http.py): they
raise different exception classes, so failures are classified by HTTP status and by name.
"""

from __future__ import annotations

import email.utils
import errno
import http
import json
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import ProviderError, redact
from ..windows import over_window
from .providers import ollama_hint

BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0  # a server asking for longer than this is effectively down
RETRYABLE_STATUS = {408, 409, 425, 429}  # plus every 5xx
ERROR_DETAIL_CHARS = 200


QUICK_RETRY_S = 0.5  # the one retry of a refused connection or a failed lookup: a server starting up
# Failures that say nothing went wrong on the other end for a while: the server is not there, or
# it is not an OpenAI API. Retries at most (the rest follow the usual policy, backoff and all).
FEW_RETRIES = {"refused": 1, "dns": 1, "tls": 0, "not_openai": 0}
NOT_OPENAI_STATUS = {404, 405, 501}  # with a body that is not JSON: a web server, not an OpenAI API
TIMEOUT_NAMES = {
    "TimeoutError", "APITimeoutError", "Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutException",
    "SocketTimeoutError", "ServerTimeoutError",
}  # fmt: skip
TLS_NAMES = {
    "SSLError", "SSLCertVerificationError", "ClientSSLError", "ClientConnectorSSLError",
    "ClientConnectorCertificateError",
}  # fmt: skip


@dataclass(frozen=True)
class Failure:
    """A failure to reach an OpenAI API at all, in words: what happened and what to check."""

    kind: str  # "refused" | "dns" | "tls" | "timeout" | "not_openai"
    what: str
    check: str


def _chain(e: BaseException) -> Iterator[BaseException]:
    """`e` and its causes (litellm wraps the openai SDK, which wraps httpx, which wraps aiohttp...)."""
    seen: BaseException | None = e
    for _ in range(12):  # a cycle must not loop forever
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _names(e: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(e).__mro__}


def _body(e: BaseException) -> str | None:
    """The start of an error response's body, where a layer kept it (httpx, or openai_http)."""
    for link in _chain(e):
        text = getattr(link, "body_text", None)
        if isinstance(text, str):
            return text
        response = getattr(link, "response", None)
        try:
            text = getattr(response, "text", None) if response is not None else None
        except Exception:  # a streamed httpx body that was never read
            text = None
        if isinstance(text, str):
            return text[:500]
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def failure(e: BaseException, timeout: float | None = None) -> Failure | None:
    """What kept a request from an OpenAI API, when it is one of the failures users meet setting up
    a server (nothing listening, a wrong host, TLS, no answer in time, a web server that is not an
    OpenAI API); None for everything else (the provider's own errors keep their words)."""
    links = list(_chain(e))
    names = set().union(*(_names(link) for link in links))
    if any(isinstance(link, ConnectionRefusedError) for link in links) or any(
        isinstance(link, OSError) and link.errno == errno.ECONNREFUSED for link in links
    ):
        return Failure("refused", "connection refused", "check that the server is running and listens there")
    if names & {"gaierror", "ClientConnectorDNSError"}:
        return Failure("dns", "the host name does not resolve", "check the host name in the URL")
    if names & TLS_NAMES:
        tls = [link for link in links if _names(link) & TLS_NAMES]
        reason = str(getattr(tls[-1], "reason", "") or "")  # the innermost: ssl's own reason code
        what = "the TLS handshake failed" + (f" ({reason.lower().replace('_', ' ')})" if reason else "")
        return Failure("tls", what, "check http:// or https:// in the URL, or SSL_CERT_FILE for a private CA")
    if names & TIMEOUT_NAMES:
        # openai_http's RequestTimeout says what ran out (no progress, or the total deadline); any
        # other layer's timeout (httpx's, under litellm) is the request timeout: no progress.
        ours = [str(link) for link in links if "RequestTimeout" in _names(link) and str(link)]
        idle = f"nothing received for {timeout:g} s" if timeout else "no response in time"
        what = ours[0] if ours else idle
        return Failure(
            "timeout", what, "check that the server is up and not overloaded, or raise --request-timeout"
        )
    status = status_of(e)
    body = _body(e) if status in NOT_OPENAI_STATUS else None
    if body is not None and not _is_json(body):
        phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        page = "a web page" if body.lstrip().startswith("<") else "a body that is not JSON"
        return Failure(
            "not_openai", f"not an OpenAI-compatible API: {status} {phrase} with {page}",
            "check the URL: the base of an OpenAI API, often ending in /v1",
        )  # fmt: skip
    return None


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
            # the direct path (openai_http, http1): no connection made (refused, DNS, TLS, a
            # proxy), a 2xx that isn't JSON; a connection lost mid-answer is a ConnectionError
            "ConnectFailed",
            "ResponseFormatError",
            # aiohttp's connection errors (litellm's transport may be aiohttp)
            "ClientConnectionError",
            "ClientPayloadError",
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
    """The provider's own message, without litellm's class-name prefixes and object reprs, on one
    short line."""
    text = str(getattr(e, "message", None) or e) or type(e).__name__
    text = re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?", "", text.strip())
    # aiohttp's "Cannot connect to host h:p ssl:<ssl.SSLContext object at 0x...>": no reprs for users.
    text = re.sub(r"\s*ssl:(<[^>]*>|default|None|True|False)", "", text)
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>", "", text)
    if "Expecting value: line 1 column 1" in text:
        text = "the response was not valid JSON"
    text = " ".join(text.split())
    return text[:ERROR_DETAIL_CHARS] + ("..." if len(text) > ERROR_DETAIL_CHARS else "")


def reason(e: BaseException, timeout: float | None = None) -> str:
    """Why an attempt failed, in a few words for a retry event: "429 Too Many Requests",
    "connection refused", "nothing received for 120 s", or the provider's message."""
    found = failure(e, timeout)
    if found is not None:
        return found.what
    status = status_of(e)
    if status is not None:
        phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        return f"{status} {phrase}".strip()
    return redact(detail(e))


def provider_error(
    model: str, e: BaseException, attempts: int, suffix: str = "", url: str | None = None,
    timeout: float | None = None,
) -> ProviderError:  # fmt: skip
    """The one line a failed call ends with: what happened, where (`url`), and what to check."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if status_of(e) == 404 and (ollama := ollama_hint(model, url)) is not None:  # providers.py's words
        where = url or "the provider's API"
        return ProviderError(redact(f"model provider error: {model}: {where}: 404 Not Found{tries}: not "
                                    f"Ollama's API ({ollama})"))  # fmt: skip
    found = failure(e, timeout)
    if found is not None:
        where = url or "the provider's API"
        message = f"model provider error: {model}: {where}: {found.what}{tries}{suffix}; {found.check}"
        return ProviderError(redact(message))
    status = status_of(e)
    if status is not None:
        try:
            what = f"{status} {http.HTTPStatus(status).phrase}"
        except ValueError:
            what = str(status)
    else:
        what = type(e).__name__
    hint = None
    if status == 400 and (too_big := over_window(detail(e))) is not None:  # windows.py's words
        return ProviderError(redact(f"model provider error: {model}: {url or 'the provider'}: {too_big}"))
    if status in (401, 403):
        provider = model.split("/", 1)[0].upper() if "/" in model else "the provider's"
        hint = f"check the API key ({provider}_API_KEY or --api-base for a local server)"
    elif status == 404:
        hint = f"check the model name {model!r} and the API base URL"
    message = f"model provider error: {model}: {what}{tries}: {detail(e)}{suffix}"
    if hint:  # in the message itself: it is the one line the user sees
        message += f" ({hint})"
    return ProviderError(redact(message))


# Failures that happen before a request is sent: the provider never saw it, so it billed nothing.
# They are found by class name anywhere in the exception's chain: litellm reports a refused
# connection as an InternalServerError (status 500) whose cause is httpx's ConnectError.
NOT_SENT = {
    "ConnectFailed",  # http1 (the direct path): refused, DNS, TLS or proxy failure while connecting
    "ClientConnectorError",  # aiohttp (litellm's transport): the same
    "ConnectError",  # httpx
    "ConnectTimeout",  # httpx
    "ConnectionRefusedError",
    "gaierror",  # name resolution
}


def may_be_billed(e: BaseException) -> bool:
    """Whether a failed request may have reached the provider and been billed: a 5xx, a timeout,
    a connection reset or a body cut short after the request went out, an answer that was not
    a chat completion. Not a 4xx (rejected before any work: auth, validation, rate limits), and
    not a connection that was never made."""
    seen: BaseException | None = e
    for _ in range(10):  # causes nest a few levels deep; a cycle must not loop forever
        if seen is None:
            break
        if NOT_SENT & {cls.__name__ for cls in type(seen).__mro__}:
            return False
        seen = seen.__cause__ or seen.__context__
    status = status_of(e)
    if status is not None:
        return status >= 500
    return is_retryable(e)
