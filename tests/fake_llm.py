"""A small OpenAI-compatible model server on 127.0.0.1 for tests and benchmarks (stdlib only).

The model is faked at the HTTP boundary so every test exercises the real client path (litellm ->
openai SDK -> httpx). Root calls (first message is a system prompt) follow a script; sub-calls
(everything else) are answered by a function of the prompt. Faults (HTTP errors, Retry-After,
null content, garbage bodies, delays) are scripted per reply.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    status: int | None = None  # HTTP error status to return (e.g. 429, 500, 401)
    retry_after_ms: int | None = None  # sends `retry-after-ms` (and `retry-after` in seconds if >= 1000)
    content_none: bool = False  # 200 with message.content = null
    reasoning: str | None = None  # with content_none: put this in message.reasoning_content
    garbage: bool = False  # 200 with a non-JSON body
    delay: float = 0.0  # extra seconds before answering
    text: str = ""  # content of a normal 200 reply when no other fault applies (e.g. a delay-only Fault)
    message: str | None = None  # the error message of an error status (default: "fake: scripted N")
    trickle: float = 0.0  # send the 200 body one byte every `trickle` seconds (a slowloris server)
    finish_reason: str = "stop"  # of a normal 200 reply: "length" is a reply cut at max_tokens


@dataclass
class LocalServer:
    """What the fake says about itself, as a local model server does (model/probe.py reads it):
    llama.cpp's GET /props (slots, one slot's n_ctx) or vLLM's max_model_len in GET /v1/models. It
    then serves `slots` requests at once (the rest wait in its queue, as on the real server) and
    answers a prompt over `window` tokens (default_usage's estimate) with that server's 400."""

    kind: str = "llama.cpp"  # or "vllm"
    slots: int = 4
    window: int = 8192


Reply = str | Fault | Callable[[dict], str | Fault]  # a callable receives the parsed request body

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def reply(text: str, code: str | None = None) -> str:
    """Format a root-model reply: optional prose, then a fenced ```repl block."""
    if code is None:
        return text
    block = f"```repl\n{code}\n```"
    return f"{text}\n{block}" if text else block


def _text_of(content: Any) -> str:
    """Message content as text; OpenAI also allows a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def default_usage(body: dict, text: str) -> tuple[int, int]:
    """Roughly 4 characters per token, never zero (some clients treat 0 as 'unknown')."""
    chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages", []))
    return max(1, chars // 4), max(1, len(text) // 4)


def default_sub(prompt: str) -> str:
    return "sub: " + prompt[:50]


class FakeLLM:
    def __init__(
        self,
        root: list[Reply] | None = None,
        sub: Callable[[str], str | Fault] | None = None,
        latency: float = 0.0,
        # (prompt_tokens, completion_tokens), sent as given (any JSON value: tests send -5, 1e300,
        # NaN, "12"); None leaves `usage` out of the response.
        usage: Callable[[dict, str], tuple[Any, Any] | None] | None = None,
    ):
        self._root: list[Reply] = list(root or [])
        self._root_next = 0
        self.sub = sub or default_sub
        self.latency = latency
        self.usage = usage or default_usage
        # Each also has "t_start" (its body read, before the fake's parse) and "t_end" (its reply written),
        # on time.monotonic().
        self.requests: list[dict] = []
        # Root replies chosen by the request rather than in turn: for runs with child RLMs, whose
        # root calls interleave (recursion). Set, it answers every root call; None: the script.
        self.route: Callable[[dict], Reply] | None = None
        self.stray: list[dict] = []  # requests to other routes (e.g. another provider's API): path, headers
        self.local: LocalServer | None = None  # set (before requests arrive) to act as a local server
        self.in_flight = 0  # chat requests received and not yet answered, queued ones included...
        self.max_in_flight = 0  # ...and the most there ever were at once
        self._slots: threading.Semaphore | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeLLM:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        # The default listen backlog (5) drops connections when 64+ clients connect at once.
        server.request_queue_size = 256
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        # A short poll interval makes stop() (shutdown) quick; the default waits up to 0.5 s.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and inspection ----------------------------------------------------------------

    def add_root(self, *replies: Reply) -> None:
        with self._lock:
            self._root.extend(replies)

    @property
    def root_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["kind"] == "root"]

    @property
    def sub_requests(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["kind"] == "sub"]

    @property
    def root_remaining(self) -> int:
        """Scripted root replies not consumed yet."""
        with self._lock:
            return len(self._root) - self._root_next

    # -- request handling (called from server threads) -------------------------------------------

    def _record(self, body: dict, raw: bytes, headers: dict[str, str], received: float | None = None) -> dict:
        """The request's entry in `requests` (its "kind": root or sub); "t_start" is `received`, when
        its last byte was read (the fake's own JSON parse is not the client's time), else now."""
        messages = body.get("messages") or [{}]
        first = messages[0] if isinstance(messages[0], dict) else {}
        kind = "root" if first.get("role") == "system" else "sub"
        entry = {"body": body, "raw": raw, "headers": headers, "kind": kind}
        entry["t_start"] = time.monotonic() if received is None else received
        with self._lock:
            self.requests.append(entry)
        return entry

    def _next_root(self) -> Reply | None:
        with self._lock:
            if self._root_next >= len(self._root):
                return None
            item = self._root[self._root_next]
            self._root_next += 1
            return item

    def _resolve(self, kind: str, body: dict) -> str | Fault | None:
        """The reply for one request; None means the root script is exhausted."""
        if kind == "root":
            item = self._next_root() if self.route is None else self.route(body)
            if callable(item):
                return item(body)
            return item
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        prompt = _text_of(users[-1].get("content")) if users else ""
        return self.sub(prompt)


def _error_body(status: int, message: str) -> dict:
    etype, code = _ERROR_TYPES.get(status, ("server_error", "server_error"))
    return {"error": {"message": message, "type": etype, "code": code, "param": None}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLM  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, like real providers
    disable_nagle_algorithm = True  # headers and body go in two writes: don't hold the body ~40 ms

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # no access logs on stderr

    def _send(
        self,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except ConnectionError:  # the client gave up (e.g. a timeout test): nothing to report
            self.close_connection = True

    def _send_json(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def do_GET(self) -> None:
        local = self.fake.local
        if local is not None and self.path == "/props" and local.kind == "llama.cpp":
            settings = {"n_ctx": local.window, "params": {"n_predict": -1}}
            self._send_json(200, {"default_generation_settings": settings, "total_slots": local.slots})
        elif local is not None and self.path.rstrip("/").endswith("/models"):
            entry: dict[str, Any] = {"id": "fake-model", "object": "model", "created": 0}
            if local.kind == "vllm":
                entry.update(owned_by="vllm", max_model_len=local.window)
            else:
                meta = {"n_ctx": local.window, "n_ctx_train": 4 * local.window}
                entry.update(owned_by="llamacpp", meta=meta)
            self._send_json(200, {"object": "list", "data": [entry]})
        elif self.path.rstrip("/").endswith("/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
                },
            )
        else:
            self._send_json(404, _error_body(404, f"fake: no route GET {self.path}"))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = time.monotonic()
        if not self.path.rstrip("/").endswith("/chat/completions"):
            with self.fake._lock:
                headers = {k.lower(): v for k, v in self.headers.items()}
                self.fake.stray.append({"path": self.path, "headers": headers, "raw": raw})
            self._send_json(404, _error_body(404, f"fake: no route POST {self.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, _error_body(400, "fake: request body is not JSON"))
            return
        fake = self.fake
        entry = fake._record(body, raw, {k.lower(): v for k, v in self.headers.items()}, received)
        kind = entry["kind"]
        try:
            answer = fake._resolve(kind, body)
        except Exception as e:  # a test's reply callable broke: say so instead of hanging up
            self._send_json(500, _error_body(500, f"fake: reply callable raised {e!r}"))
            return
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            if fake.local is not None and fake._slots is None:
                fake._slots = threading.Semaphore(fake.local.slots)
        try:
            with fake._slots or contextlib.nullcontext():  # a local server's queue: `slots` at a time
                self._serve(fake, body, answer)
        finally:
            with fake._lock:
                fake.in_flight -= 1
        entry["t_end"] = time.monotonic()

    def _serve(self, fake: FakeLLM, body: dict, answer: str | Fault | None) -> None:
        if fake.local is not None and (over := self._over_window(body, fake.local)) is not None:
            self._send_json(400, over)
            return
        if fake.latency:
            time.sleep(fake.latency)
        if answer is None:
            self._send_json(500, _error_body(500, "fake: root script exhausted"))
            return
        # Duck-typed rather than isinstance(Fault): tests may import this module under two names
        # (fake_llm and tests.fake_llm), giving two distinct Fault classes.
        fault = Fault(text=answer) if isinstance(answer, str) else answer
        if fault.delay:
            time.sleep(fault.delay)
        self._answer(body, fault)

    def _over_window(self, body: dict, local: LocalServer) -> dict | None:
        """The error body a real server sends for a prompt beyond its window (its own wording)."""
        tokens = default_usage(body, "")[0]
        if tokens <= local.window:
            return None
        if local.kind == "vllm":
            message = (
                f"This model's maximum context length is {local.window} tokens. However, your request has "
                f"{tokens} input tokens. Please reduce the length of the input messages."
            )
            return {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
        message = (
            f"request ({tokens} tokens) exceeds the available context size ({local.window} tokens), "
            "try increasing it"
        )
        error = {"code": 400, "message": message, "type": "exceed_context_size_error"}
        return {"error": {**error, "n_prompt_tokens": tokens, "n_ctx": local.window}}

    def _answer(self, body: dict, fault: Fault) -> None:
        if fault.status is not None and fault.status >= 400:
            headers: dict[str, str] = {}
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
                if fault.retry_after_ms >= 1000:
                    headers["retry-after"] = str(math.ceil(fault.retry_after_ms / 1000))
            error = _error_body(fault.status, fault.message or f"fake: scripted {fault.status}")
            self._send_json(fault.status, error, headers)
            return
        if fault.garbage:
            self._send(200, b"<html>this is not JSON {", content_type="application/json")
            return
        text = "" if fault.content_none else fault.text
        message: dict[str, Any] = {"role": "assistant", "content": None if fault.content_none else text}
        if fault.reasoning is not None:
            message["reasoning_content"] = fault.reasoning
        counts = self.fake.usage(body, text or (fault.reasoning or ""))
        usage: dict[str, Any] | None = None
        if counts is not None:
            prompt_tokens, completion_tokens = counts
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
            both = [prompt_tokens, completion_tokens]
            if all(isinstance(n, int | float) for n in both):
                usage["total_tokens"] = prompt_tokens + completion_tokens
        model = body.get("model", "fake-model")
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if body.get("stream"):
            self._stream(rid, created, model, message, usage, body)
            return
        response = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": fault.finish_reason, "logprobs": None}
            ],
        }
        if usage is not None:
            response["usage"] = usage
        if fault.trickle:
            self._trickle(json.dumps(response).encode(), fault.trickle)
            return
        self._send_json(200, response)

    def _trickle(self, payload: bytes, interval: float) -> None:
        """Headers at once, then the body one byte at a time: never idle for long, never done."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(payload)):
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
                time.sleep(interval)
        except (ConnectionError, OSError):  # the client gave up, as it should
            self.close_connection = True

    def _stream(self, rid: str, created: int, model: str, message: dict, usage: dict, body: dict) -> None:
        """Server-sent events: one content delta, a finish chunk, an optional usage chunk, [DONE]."""
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        delta = {k: v for k, v in message.items() if v is not None}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        payload = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send(200, payload.encode(), content_type="text/event-stream")
