"""A minimal OpenAI chat-completions client on aiohttp, used by ModelClient for sub-calls.

litellm costs ~4 ms of CPU per call, and a batch of 64 sub-calls pays that one call after another
on the event loop; a plain POST with a JSON parse costs ~0.3 ms. This module only sends `model` and
`messages` and parses the reply: retries, budgets, pricing and error wording stay in model/client.py.
aiohttp is imported on first use, not at import time (`rlm --help` must stay fast).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass
class ChatReply:
    text: str  # message content, or the reasoning when the content is empty (sub-calls only)
    # As the server sent them (None when absent): any JSON value. client.py validates them against its
    # estimates (budget.checked_usage) before anything counts them.
    prompt_tokens: Any
    completion_tokens: Any


class ChatClient:
    """One aiohttp session per event loop, like ModelClient's semaphore; `aclose()` closes it.

    Should a loop end without `aclose()` (several asyncio.run() calls on one client), the session
    is still closed by the loop's shutdown: asyncio.run() closes every open async generator before
    it closes the loop, and `_closer` is one.
    """

    def __init__(self) -> None:
        self._session: Any = None  # aiohttp.ClientSession
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: AsyncGenerator[None, None] | None = None
        self._proxies: dict[str, dict[str, Any]] = {}  # url -> proxy arguments of session.post()

    async def _session_for_loop(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            import aiohttp

            # No connection limit of our own: ModelClient's semaphore bounds the calls in flight.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(connector=connector)
            self._loop = loop
            self._closer = _close_at_shutdown(self._session)
            await anext(self._closer)  # started, so the loop's shutdown will close it
        return self._session

    def _proxy(self, url: str) -> dict[str, Any]:
        """HTTP(S)_PROXY / NO_PROXY, as for the openai SDK, looked up once per URL.

        (aiohttp's trust_env=True would do the same lookup in a thread, plus a netrc read, on
        every request: ~0.3 ms of CPU each.)
        """
        if url not in self._proxies:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
            except LookupError:
                self._proxies[url] = {}
            else:
                headers = {"Proxy-Authorization": auth.encode()} if auth is not None else None
                self._proxies[url] = {"proxy": proxy, "proxy_headers": headers}
        return self._proxies[url]

    async def aclose(self) -> None:
        """Close the session of the running loop (a session of an ended loop cannot be closed)."""
        closer, loop = self._closer, self._loop
        self._session = self._loop = self._closer = None
        if closer is not None and loop is asyncio.get_running_loop():
            await closer.aclose()  # its `finally` closes the session

    async def chat(
        self,
        url: str,
        headers: Mapping[str, str],
        model: str,
        messages: list[dict],
        timeout: float,
        ssl: Any = True,
    ) -> ChatReply:
        """POST one chat completion to `url` (the full .../chat/completions address)."""
        import aiohttp

        session = await self._session_for_loop()
        body = json.dumps({"model": model, "messages": messages}).encode()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                ssl=ssl,
                **self._proxy(url),
            ) as response:
                raw = await response.read()
                status, response_headers = response.status, response.headers
        except TimeoutError:  # aiohttp's total timeout (asyncio.TimeoutError is TimeoutError)
            raise TimeoutError(f"no response within {timeout:g} s") from None
        if status >= 400:
            body = raw[:ERROR_BODY_CHARS].decode("utf-8", "replace")
            raise HTTPStatusError(status, _error_message(raw, status), response_headers, body)
        return _parse_reply(raw)


async def _close_at_shutdown(session: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not session.closed:
            await session.close()


def _parse_reply(raw: bytes) -> ChatReply:
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
    # This path serves sub-calls only: their reply is text for a cell, never code that runs, so an
    # empty content falls back to the reasoning (vLLM & co. sometimes put the whole answer there).
    text = message.get("content")
    if not text:
        text = message.get("reasoning_content") or message.get("reasoning")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatReply(
        text=text if isinstance(text, str) else "",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
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
