"""The direct path's HTTP/1.1 transport (rlmcli/model/http1.py), against real servers on 127.0.0.1.

The servers here run in the test's own event loop and count what they see (connections, requests,
closes): keep-alive, a server closing a kept-alive connection (idle, or racing our next request),
chunked and compressed answers, a 429's retry-after, a trickling answer, proxies (plain http
forwarded, https through CONNECT, to a TLS server with a certificate made by the openssl CLI),
cancellation and closing.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest

from rlmcli.budget import Budget
from rlmcli.model import http1, openai_http, retry
from rlmcli.model.client import ModelClient, ModelConfig
from rlmcli.model.retry import may_be_billed

COMPLETION = {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
MESSAGES = [{"role": "user", "content": "hello"}]
HEAD_END = b"\r\n\r\n"


def response(status: int = 200, payload: Any = COMPLETION, headers: dict[str, str] | None = None) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode() + body


async def read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP message with a Content-Length body: (first line, lowercased headers, body); None at EOF."""
    try:
        head = await reader.readuntil(HEAD_END)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *fields = head[: -len(HEAD_END)].decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (f.split(":", 1) for f in fields)}
    return line, headers, await reader.readexactly(int(headers.get("content-length", "0")))


# Answers one request: (connection number from 1, request number on it from 0, the request, the
# writer); returns whether to keep the connection open.
Answer = Callable[[int, int, tuple[str, dict[str, str], bytes], asyncio.StreamWriter], Awaitable[bool]]


async def plain(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
    writer.write(response())
    return True


class Server:
    """An HTTP/1.1 server on 127.0.0.1 in the running loop; `answer` writes each reply."""

    def __init__(self, answer: Answer = plain, context: ssl.SSLContext | None = None):
        self.answer, self.context = answer, context
        self.connections = 0
        self.requests: list[tuple[int, str, dict[str, str], bytes]] = []  # (connection, line, headers, body)
        self.closed: list[int] = []  # connections the client closed, in order
        self.readers: dict[int, asyncio.StreamReader] = {}
        self.changed = asyncio.Event()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def wait(self, condition: Callable[[], bool]) -> None:
        async def until() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), 10)

    def _note(self) -> None:
        self.changed.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        self.readers[conn] = reader
        try:
            for n in range(1000):
                request = await read_message(reader)
                if request is None:  # the client closed the connection
                    self.closed.append(conn)
                    return
                self.requests.append((conn, *request))
                self._note()
                if not await self.answer(conn, n, request, writer):
                    return
                await writer.drain()
        finally:
            writer.close()
            self._note()


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def post(pool: http1.Pool, url: str, progress: list[int] | None = None, **kw: Any) -> http1.Response:
    def noted() -> None:
        if progress is not None:
            progress.append(1)

    body = json.dumps({"model": "m", "messages": MESSAGES}).encode()
    return await pool.post(
        http1.target(url + "/chat/completions"), body, {"X-Test": "1"}, kw.get("ctx"), noted
    )


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")


# -- keep-alive -------------------------------------------------------------------------------


def test_two_requests_share_one_connection_and_say_who_sends_them() -> None:
    async def go() -> tuple[Server, list[http1.Response]]:
        async with Server() as server:
            pool = http1.Pool()
            try:
                replies = [await post(pool, server.url()), await post(pool, server.url())]
            finally:
                await pool.aclose()
            await server.wait(lambda: server.closed == [1])  # aclose() closed the pooled one
        return server, replies

    server, replies = run(go())
    assert server.connections == 1 and [r[0] for r in server.requests] == [1, 1]
    assert [(r.status, json.loads(r.body)) for r in replies] == [(200, COMPLETION)] * 2
    _, line, headers, body = server.requests[0]
    assert line == "POST /v1/chat/completions HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}" and headers["x-test"] == "1"
    assert headers["user-agent"].startswith("rlm/") and headers["accept"] == "application/json"
    assert headers["accept-encoding"] == "identity" and json.loads(body)["messages"] == MESSAGES
    assert replies[0].headers["CONTENT-type"] == "application/json"  # any case


def test_a_connection_the_server_closes_is_not_reused() -> None:
    """One server closes each connection after its answer (as an idle timeout would), another says
    `Connection: close`: every request succeeds, each on a connection of its own."""

    async def close_after(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(response())
        return False

    async def says_close(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(headers={"Connection": "close"}))
        await writer.drain()
        return True  # the client must close it: it said so

    async def go(answer: Answer) -> Server:
        async with Server(answer) as server:
            client, retries = model_client(server.url())
            try:
                assert [await client.sub(f"p{i}") for i in range(3)] == ["ok"] * 3
            finally:
                await client.aclose()
            assert retries == []
        return server

    for answer in (close_after, says_close):
        server = run(go(answer))
        assert server.connections == 3 and [r[0] for r in server.requests] == [1, 2, 3]


@pytest.mark.parametrize("together", [True, False], ids=["with-the-answer", "later"])
def test_a_connection_with_stray_bytes_is_not_reused(together: bool) -> None:
    """Some servers send a 408 on an idle connection before they close it: it must not be read as
    the answer to the next request (whether it came in one read with the answer, or later)."""

    async def stray(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(response())
        if n == 0:
            if not together:
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        return True

    async def go() -> tuple[Server, list[int]]:
        async with Server(stray) as server:
            pool = http1.Pool()
            try:
                first = await post(pool, server.url())
                await asyncio.sleep(0.2)  # the 408 comes in meanwhile (or the test proves nothing)
                second = await post(pool, server.url())
            finally:
                await pool.aclose()
        return server, [first.status, second.status]

    server, statuses = run(go())
    assert statuses == [200, 200] and server.connections == 2


def test_a_request_racing_the_servers_close_is_sent_again_on_a_fresh_connection() -> None:
    """The keep-alive race: the server closes a kept-alive connection as our next request reaches
    it, without a byte of answer. The pool sends it again on a new connection: no failed attempt,
    no retry event, one sub-call; the server saw it twice."""

    async def drops_second(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            return False  # closed, unanswered
        writer.write(response())
        return True

    async def go() -> tuple[Server, ModelClient, list[Any]]:
        async with Server(drops_second) as server:
            client, retries = model_client(server.url())
            try:
                assert [await client.sub("a"), await client.sub("b")] == ["ok", "ok"]
            finally:
                await client.aclose()
        return server, client, retries

    server, client, retries = run(go())
    assert retries == [] and client.budget.usage.subcalls == 2
    assert [r[0] for r in server.requests] == [1, 1, 2]


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_silent_resend() -> None:
    async def drops(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        return False

    async def go() -> tuple[Server, BaseException]:
        async with Server(drops) as server:
            pool = http1.Pool()
            with pytest.raises(http1.ServerDisconnected) as info:
                await post(pool, server.url())
            await pool.aclose()
        return server, info.value

    server, error = run(go())
    assert server.connections == 1 and len(server.requests) == 1
    # Retried by ModelClient's policy, and counted as possibly billed: the request went out.
    assert retry.is_retryable(error) and may_be_billed(error)


# -- what comes back --------------------------------------------------------------------------


def test_a_chunked_answer_is_read_whole_and_the_connection_reused() -> None:
    payload = json.dumps(COMPLETION).encode()
    pieces = [payload[:10], payload[10:30], payload[30:]]

    async def chunked(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        )
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        return True

    async def go() -> tuple[Server, list[http1.Response], list[int]]:
        progress: list[int] = []
        async with Server(chunked) as server:
            pool = http1.Pool()
            try:
                replies = [await post(pool, server.url(), progress), await post(pool, server.url())]
            finally:
                await pool.aclose()
        return server, replies, progress

    server, replies, progress = run(go())
    assert [r.body for r in replies] == [payload, payload] and server.connections == 1
    assert progress  # noted as bytes came


def test_a_compressed_answer_is_decoded() -> None:
    """Asked for `identity`, a server may compress anyway."""

    async def gzipped(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            response(
                payload=gzip.compress(json.dumps(COMPLETION).encode()), headers={"Content-Encoding": "gzip"}
            )
        )
        return True

    async def go() -> http1.Response:
        async with Server(gzipped) as server:
            pool = http1.Pool()
            try:
                return await post(pool, server.url())
            finally:
                await pool.aclose()

    assert json.loads(run(go()).body) == COMPLETION


def test_a_429_hands_its_retry_after_to_the_retry_policy() -> None:
    async def limited(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        error = {"error": {"message": "slow down", "type": "rate_limit_error"}}
        headers = {"Retry-After": "7"} if n == 0 else {"Retry-After-Ms": "1500", "Retry-After": "2"}
        writer.write(response(429, error, headers))
        return True

    async def go() -> list[openai_http.HTTPStatusError]:
        errors = []
        async with Server(limited) as server:
            chat = openai_http.ChatClient()
            try:
                for _ in range(2):
                    with pytest.raises(openai_http.HTTPStatusError) as info:
                        await chat.chat(server.url() + "/chat/completions", {}, "m", MESSAGES, 10.0)
                    errors.append(info.value)
            finally:
                await chat.aclose()
        return errors

    first, second = run(go())
    assert first.status_code == 429 and first.message == "slow down"
    assert first.headers["retry-after"] == first.headers["Retry-After"] == "7"
    assert retry.retry_after(first) == 7.0 and retry.retry_after(second) == 1.5


def test_a_trickling_answer_is_progress() -> None:
    """The answer comes in 8 pieces 0.15 s apart: 1.05 s in all, past the 0.6 s timeout, but never
    0.6 s without a byte, so it succeeds."""
    payload = json.dumps(COMPLETION).encode()

    async def trickle(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(payload=payload)[: -len(payload)])
        step = len(payload) // 8 + 1
        for i in range(0, len(payload), step):
            await asyncio.sleep(0.15)
            writer.write(payload[i : i + step])
            await writer.drain()
        return True

    async def go() -> str:
        async with Server(trickle) as server:
            chat = openai_http.ChatClient()
            try:
                reply = await chat.chat(server.url() + "/chat/completions", {}, "m", MESSAGES, 0.6)
            finally:
                await chat.aclose()
        return reply.text

    assert run(go()) == "ok"


def test_a_server_that_does_not_speak_http_is_a_protocol_error() -> None:
    async def ssh(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return False

    async def go() -> None:
        async with Server(ssh) as server:
            pool = http1.Pool()
            with pytest.raises(h11.RemoteProtocolError):
                await post(pool, server.url())
            await pool.aclose()

    run(go())


# -- connecting -------------------------------------------------------------------------------


def test_connect_failures_are_connect_failed_chained_from_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncio folds one error per address (localhost: ::1, 127.0.0.1) into an OSError without an
    errno: all refused still reads as "connection refused", and was never sent (not billed)."""

    async def refused_twice(*args: Any, **kw: Any) -> Any:
        raise OSError(
            "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1, 0, 0), "
            "[Errno 111] Connect call failed ('127.0.0.1', 1)"
        )

    monkeypatch.setattr(asyncio, "open_connection", refused_twice)

    async def go() -> BaseException:
        pool = http1.Pool()
        with pytest.raises(http1.ConnectFailed) as info:
            await post(pool, "http://localhost:1/v1")
        return info.value

    error = run(go())
    assert isinstance(error.__cause__, OSError) and error.errno == 111
    found = retry.failure(error)
    assert found is not None and found.what == "connection refused"
    assert retry.is_retryable(error) and not may_be_billed(error)


# -- cancellation and closing -----------------------------------------------------------------


def test_a_cancelled_request_closes_its_connection() -> None:
    async def go() -> Server:
        async def held(conn: int, n: int, request: Any, writer: asyncio.StreamWriter) -> bool:
            if conn == 1:  # no answer: the next thing on this connection is the client's close
                assert await server.readers[1].read() == b""
                server.closed.append(1)
                return False
            writer.write(response())
            return True

        async with Server(held) as server:
            pool = http1.Pool()
            try:
                pending = asyncio.ensure_future(post(pool, server.url()))
                await server.wait(lambda: len(server.requests) == 1)
                pending.cancel()
                await server.wait(lambda: server.closed == [1])  # the server saw it close
                assert (await post(pool, server.url())).status == 200  # on a new connection
            finally:
                await pool.aclose()
        return server

    server = run(go())
    assert server.connections == 2 and [r[0] for r in server.requests] == [1, 2]


# -- proxies ----------------------------------------------------------------------------------


class ForwardingProxy:
    """An HTTP proxy in the running loop: plain-http requests (absolute-form) forwarded one by one
    on one upstream connection per client connection, and CONNECT tunnels; it records each request
    line and Proxy-Authorization."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def __aenter__(self) -> ForwardingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (request := await read_message(reader)) is not None:
                line, headers, body = request
                self.seen.append((line, headers.get("proxy-authorization")))
                method, where, _ = line.split(" ")
                if method == "CONNECT":
                    host, port = where.rsplit(":", 1)
                    up_reader, up_writer = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
                    return
                if upstream is None:
                    parts = urlsplit(where)
                    upstream = await asyncio.open_connection(parts.hostname, parts.port)
                fields = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "proxy-authorization")
                upstream[1].write(f"{line}\r\n{fields}\r\n".encode() + body)
                answer = await read_message(upstream[0])
                assert answer is not None
                status, answer_headers, answer_body = answer
                fields = "".join(f"{k}: {v}\r\n" for k, v in answer_headers.items())
                writer.write(f"{status}\r\n{fields}\r\n".encode() + answer_body)
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def test_plain_http_through_a_proxy_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> tuple[ForwardingProxy, Server]:
        async with ForwardingProxy() as proxy, Server() as server:
            parts = urlsplit(proxy.url)
            monkeypatch.setenv("http_proxy", f"http://user:p%40ss@{parts.netloc}")
            client, retries = model_client(server.url())
            try:
                assert [await client.sub("a"), await client.sub("b")] == ["ok", "ok"]
            finally:
                await client.aclose()
        return proxy, server

    proxy, server = run(go())
    target = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    credentials = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert proxy.seen == [(f"POST {target} HTTP/1.1", credentials)] * 2
    assert server.connections == 1  # kept alive through the proxy


def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> tuple[ForwardingProxy, Server]:
        async with ForwardingProxy() as proxy, Server() as server:
            monkeypatch.setenv("http_proxy", proxy.url)
            monkeypatch.setenv("no_proxy", "127.0.0.1")
            pool = http1.Pool()
            try:
                assert (await post(pool, server.url())).status == 200
            finally:
                await pool.aclose()
        return proxy, server

    proxy, server = run(go())
    assert proxy.seen == [] and len(server.requests) == 1


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for 127.0.0.1 (and its key), made by the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    openai_http._tls.cache_clear()  # it reads SSL_CERT_FILE once
    yield cert, key
    openai_http._tls.cache_clear()


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_https_direct_and_through_a_connect_tunnel(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE names the private CA, as litellm reads it: https straight to the server, then
    through the proxy's CONNECT tunnel (the proxy sees CONNECT only, never the request)."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_VERIFY", raising=False)

    async def go() -> tuple[ForwardingProxy, Server]:
        async with ForwardingProxy() as proxy, Server(context=tls_server_context(cert, key)) as server:
            direct, retries = model_client(server.url("https"))
            try:
                assert await direct.sub("direct") == "ok"
            finally:
                await direct.aclose()
            monkeypatch.setenv("https_proxy", proxy.url)  # read by the next client (once per URL)
            tunnelled, more = model_client(server.url("https"))
            try:
                assert [await tunnelled.sub("a"), await tunnelled.sub("b")] == ["ok", "ok"]
            finally:
                await tunnelled.aclose()
            assert retries == more == []
        return proxy, server

    proxy, server = run(go())
    assert proxy.seen == [(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1", None)]
    assert server.connections == 2 and [r[0] for r in server.requests] == [1, 2, 2]


def test_an_untrusted_certificate_is_a_tls_failure(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate

    async def go() -> BaseException:
        async with Server(context=tls_server_context(cert, key)) as server:
            pool = http1.Pool()
            with pytest.raises(http1.ConnectFailed) as info:
                await post(pool, server.url("https"), ctx=ssl.create_default_context())
            return info.value

    error = run(go())
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    found = retry.failure(error)
    assert found is not None and found.kind == "tls" and "certificate verify failed" in found.what
    assert not may_be_billed(error)


def model_client(url: str) -> tuple[ModelClient, list[float]]:
    """A ModelClient for `url` whose waits before retries are recorded instead of slept: every
    retry waits first (and is an event), so an empty list means no retry."""
    config = ModelConfig(model="openai/m", api_base=url, backoff_base=0.01)
    client = ModelClient(config, config, Budget())
    retries: list[float] = []

    async def record(seconds: float) -> None:
        retries.append(seconds)

    client.sleep = record
    return client, retries
