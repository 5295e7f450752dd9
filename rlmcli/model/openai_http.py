"""A minimal OpenAI chat-completions client on http1.py (HTTP/1.1 on asyncio streams and h11):
ModelClient's path for root calls and sub-calls to OpenAI-protocol servers
(providers.Router.direct_route).

litellm takes seconds to import and costs ~4 ms of CPU per call (a batch of 64 sub-calls pays that
one call after another on the event loop); a plain POST with a JSON parse costs ~0.3 ms. This module
only sends `model`, `messages` (and the parameters it is given) and parses the reply: retries,
budgets, pricing and error wording stay in model/client.py. The transport (h11) is imported on first
use, not at import time (`rlm --help` must stay fast).

Timeouts measure service, not waiting: a request times out after `timeout` seconds without
progress, where progress is any byte from the server, for this request or for any other request to
the same server. A request queued behind others at a busy server (llama.cpp with 4 slots and 64
requests) thus waits as long as the server keeps answering the others; a server that stops
answering anything fails them all after `timeout`. A total deadline (`total`) still bounds each
request, so a server trickling a byte at a time cannot hold one forever.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ERROR_BODY_CHARS = 500


class HTTPStatusError(Exception):
    """The server answered with a status >= 400; client.py classifies it by `status_code`."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str], body: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers  # retry.retry_after reads retry-after(-ms) from here
        self.body_text = body  # the start of the body: retry.failure tells an OpenAI error from a web page


class ResponseFormatError(Exception):
    """A 2xx answer that is not a chat completion (e.g. an HTML page from a proxy): retryable."""


class RequestTimeout(TimeoutError):
    """No progress for `timeout` seconds, or no complete response by the total deadline; the message
    says which (retry.failure shows it as it is)."""


@dataclass
class ChatReply:
    text: str  # message content, or the reasoning when the content is empty (sub-calls only)
    # As the server sent them (None when absent): any JSON value. client.py validates them against its
    # estimates (budget.checked_usage) before anything counts them.
    prompt_tokens: Any
    completion_tokens: Any
    cached_tokens: int = 0  # of the prompt, read from the provider's prompt cache (priced lower)
    finish_reason: str | None = None  # "stop", "length" (cut at max_tokens), ... as the server sent it


def warm_up(urls: tuple[str, ...] = ()) -> None:
    """Import the transport (http1: h11, and urllib.request for the proxy lookup; ~25 ms of CPU) in
    a background thread while the run does other things (the sandbox starts: mostly waiting on
    another process), so the first request need not wait for it; for an https URL among `urls`,
    also load the CA bundle its requests verify with (tls_setting: ~45 ms), which the first request
    would otherwise load on the event loop. Not a daemon: a run that ends early waits for the import
    rather than dying inside it."""
    tls = any(url.startswith("https:") for url in urls)
    if (
        "urllib.request" not in sys.modules
        or "h11" not in sys.modules
        or (tls and _tls.cache_info().currsize == 0)
    ):
        threading.Thread(target=_load, args=(tls,), name="rlm-warm-up").start()


def _load(tls: bool) -> None:
    import urllib.request  # noqa: F401  (http1.target's proxy lookup)

    from . import http1  # noqa: F401

    if tls:
        try:
            _tls()
        except Exception:  # e.g. SSL_CERT_FILE names a bad file: the first request reports it, in words
            pass


class ChatClient:
    """One connection pool (http1.Pool) per event loop, like ModelClient's semaphore; `aclose()`
    closes it.

    Should a loop end without `aclose()` (several asyncio.run() calls on one client), the pool is
    still closed by the loop's shutdown: asyncio.run() closes every open async generator before it
    closes the loop, and `_closer` is one.
    """

    def __init__(self) -> None:
        self._pool: Any = None  # http1.Pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        # url -> http1.Target: the URL parsed and its proxy (HTTP(S)_PROXY / NO_PROXY, as for the
        # openai SDK) looked up once per URL
        self._targets: dict[str, Any] = {}
        # scheme://host:port -> loop time of the last byte any request received from that server
        self._progress: dict[str, float] = {}

    async def _pool_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            from . import http1

            self._pool = http1.Pool()
            self._loop = loop
            self._closer = _close_at_shutdown(self._pool)
            await anext(self._closer)  # started, so the loop's shutdown will close it
        return self._pool

    def _target(self, url: str) -> Any:
        where = self._targets.get(url)
        if where is None:
            from . import http1

            where = self._targets[url] = http1.target(url)
        return where

    async def aclose(self) -> None:
        """Close the pool of the running loop (connections of an ended loop cannot be closed)."""
        closer, loop = self._closer, self._loop
        self._pool = self._loop = self._closer = None
        if closer is not None and loop is asyncio.get_running_loop():
            await closer.aclose()  # its `finally` closes the pool

    async def chat(
        self,
        url: str,
        headers: Mapping[str, str],
        model: str,
        messages: list[dict],
        timeout: float,
        *,
        total: float | None = None,
        reasoning: bool = True,
        params: Mapping[str, Any] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> ChatReply:
        """POST one chat completion to `url` (the full .../chat/completions address).

        `timeout`: seconds without progress (see the module's docstring); `total`: the most the
        request may take in all. `reasoning`: an empty content falls back to the reasoning (for
        sub-calls, never for root calls). `params` go into the body as they are (max_tokens, ...).
        `on_sent` is called once the request is written out.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        origin = _origin(url)
        mine = [started]  # the loop time of this request's last progress
        exchange = asyncio.ensure_future(
            self._exchange(url, headers, model, messages, params, origin, mine, on_sent)
        )
        try:
            while not exchange.done():
                deadline = max(mine[0], self._progress.get(origin, started)) + timeout
                if total is not None:
                    deadline = min(deadline, started + total)
                wait = deadline - loop.time()
                if wait <= 0:
                    if total is not None and loop.time() >= started + total:
                        raise RequestTimeout(f"no complete response within {total:g} s")
                    raise RequestTimeout(f"nothing received for {timeout:g} s")
                await asyncio.wait((exchange,), timeout=wait)
        finally:
            if not exchange.done():  # timed out, or the caller was cancelled
                exchange.cancel()
        status, response_headers, raw = exchange.result()
        if status >= 400:
            body = raw[:ERROR_BODY_CHARS].decode("utf-8", "replace")
            raise HTTPStatusError(status, _error_message(raw, status), response_headers, body)
        return _parse_reply(raw, reasoning)

    async def _exchange(
        self,
        url: str,
        headers: Mapping[str, str],
        model: str,
        messages: list[dict],
        params: Mapping[str, Any] | None,
        origin: str,
        mine: list[float],
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send the request and read the whole response, noting progress as bytes arrive."""
        pool = await self._pool_for_loop()
        where = self._target(url)
        body = json.dumps({"model": model, "messages": messages, **(params or {})}).encode()
        loop = asyncio.get_running_loop()
        progress = self._progress

        def noted() -> None:  # bytes came in: this request, and its server, made progress
            mine[0] = progress[origin] = loop.time()

        response = await pool.post(where, body, headers, tls_setting(url), noted, on_sent)
        return response.status, response.headers, response.body


async def _close_at_shutdown(pool: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await pool.aclose()


def _origin(url: str) -> str:
    """scheme://host:port: requests to one server share its progress."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@functools.cache
def _tls() -> Any:
    """TLS settings as litellm resolves them (SSL_VERIFY, SSL_CERT_FILE, certifi's bundle), so both
    paths agree: a context that verifies nothing (SSL_VERIFY=false), or one with the CA bundle to
    trust."""
    import ssl

    verify = os.environ.get("SSL_VERIFY", "")
    if verify.strip().lower() in ("false", "0", "no", "off"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = verify if verify and os.path.exists(verify) else None
    cert_file = os.environ.get("SSL_CERT_FILE")
    if cafile is None and cert_file and os.path.exists(cert_file):
        cafile = cert_file
    if cafile is None:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:  # the system's bundle
            cafile = None
    return ssl.create_default_context(cafile=cafile)


def tls_setting(url: str) -> Any:
    """The ssl.SSLContext of a URL's requests; None for plain http (local servers): nothing to load."""
    return _tls() if url.startswith("https:") else None


def _parse_reply(raw: bytes, reasoning: bool = True) -> ChatReply:
    try:
        data = json.loads(raw)
    except ValueError:
        raise ResponseFormatError("the response was not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices", []), list):
        raise ResponseFormatError("the response is not a chat completion")
    if "choices" not in data and "error" in data:  # some proxies report errors with status 200
        raise ResponseFormatError(_error_message(raw, 200))
    choices = data.get("choices") or [{}]
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    message = message if isinstance(message, dict) else {}
    # A sub-call's reply is text for a cell, never code that runs, so an empty content falls back to
    # the reasoning (vLLM & co. sometimes put the whole answer there). A root reply is the content
    # only: a reasoning model's draft must never run code or end the run.
    text = message.get("content")
    if not text and reasoning:
        text = message.get("reasoning_content") or message.get("reasoning")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) and not isinstance(cached, bool) and cached > 0 else 0
    finish = choices[0].get("finish_reason") if isinstance(choices[0], dict) else None
    return ChatReply(
        text=text if isinstance(text, str) else "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        cached_tokens=cached
        if isinstance(cached, int) and not isinstance(cached, bool) and cached > 0
        else 0,
        finish_reason=finish if isinstance(finish, str) else None,
    )


def _error_message(raw: bytes, status: int) -> str:
    """The provider's message from an OpenAI error body ({"error": {"message": ...}}), else the text."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        message = message or (error if isinstance(error, str) else None) or data.get("message")
        message = message or data.get("detail")
    if not isinstance(message, str) or not message.strip():
        message = raw.decode("utf-8", "replace").strip() or f"HTTP {status} with an empty body"
    return message[:ERROR_BODY_CHARS]
