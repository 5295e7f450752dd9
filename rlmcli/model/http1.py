"""HTTP/1.1 POSTs on asyncio streams and h11: the transport of the direct OpenAI-protocol path
(openai_http.py).

Why not aiohttp: importing it costs ~0.3 s of CPU (a third of it loading the CA bundle at import),
on the way to a run's first request; h11 (a pure-Python HTTP/1.1 state machine, httpx's) imports in
~15 ms. The direct path needs little: one POST with a body, the status, headers and whole body of
the answer, keep-alive, HTTP(S)_PROXY / NO_PROXY, TLS. No redirects, cookies, HTTP/2 or compression
(the request asks for `identity`; a gzip/deflate answer is still decoded).

- Keep-alive: a Pool holds idle connections per origin (and proxy), for one event loop. A connection
  goes back only when h11 says the exchange ended cleanly and both sides may go on. A pooled
  connection the server closed meanwhile (EOF or a reset before any byte of the answer: the
  keep-alive race) is replaced by a fresh one and the request sent again, once, inside `post`: the
  caller sees no failure. No connection limit: ModelClient's semaphore bounds the calls in flight.
- No timeouts here: the caller cancels (openai_http.ChatClient.chat bounds requests by progress).
  A cancelled or failed request closes its connection; it never goes back to the pool.
- Errors are the standard library's, where they happen: anything before the request could be sent
  (refused, DNS, TLS, the proxy) is a ConnectFailed chained from the original (retry.py and
  retry.NOT_SENT read the chain); afterwards ConnectionResetError (ServerDisconnected when the
  server closes before the answer is complete) or h11.RemoteProtocolError (the server does not
  speak HTTP).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import h11

from .. import __version__

USER_AGENT = f"rlm/{__version__}"
READ_CHUNK = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # a status line and header fields larger than this are not an API's answer
HAPPY_EYEBALLS_S = 0.25  # as aiohttp: a second address is tried when the first is silent this long


class ConnectFailed(OSError):
    """No connection to the server, or through the proxy, could be made: the request was never sent.

    Chained from the original error (`__cause__`: ConnectionRefusedError, socket.gaierror,
    ssl.SSLError, ...), whose errno it keeps. A proxy's refusal of CONNECT carries its `status_code`."""

    def __init__(self, message: str, errno: int | None = None, status_code: int | None = None):
        super().__init__(message)
        self.errno = errno
        if status_code is not None:
            self.status_code = status_code


class ServerDisconnected(ConnectionResetError):
    """The server closed the connection after the request went out, before its answer was complete."""


class _Stale(Exception):
    """A pooled connection turned out closed before any byte of the answer came (internal)."""


class Headers(Mapping[str, str]):
    """A response's header fields by name, case-insensitively (retry.retry_after reads
    "retry-after"); a repeated field's values joined by ", ", as HTTP allows."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[bytes, bytes]]):
        found: dict[str, str] = {}
        for name, value in fields:  # h11 gives names lowercased
            key, text = name.decode("latin-1"), value.decode("latin-1")
            found[key] = f"{found[key]}, {text}" if key in found else text
        self._fields = found

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


# NamedTuples, not dataclasses: a third of the import time each (this module is on the first
# request's path).
class Response(NamedTuple):
    status: int
    headers: Headers
    body: bytes


class Proxy(NamedTuple):
    host: str
    port: int
    authorization: str | None  # "Basic ..." from user:password in the proxy's URL


class Target(NamedTuple):
    """Where one URL's requests go, worked out once per URL (`target(url)`)."""

    tls: bool
    host: str
    port: int
    authority: str  # the Host header: host[:port], IPv6 in brackets
    path: str  # the request target: /path?query, or the absolute URL through an http proxy
    proxy: Proxy | None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.tls, self.host, self.port, self.proxy)


def target(url: str) -> Target:
    """Parse `url` and look up its proxy in HTTP(S)_PROXY / NO_PROXY, as the openai SDK does."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")
    tls = parts.scheme == "https"
    host = parts.hostname
    port = parts.port or (443 if tls else 80)
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority += f":{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts.scheme, host)
    if proxy is not None and not tls:  # a plain-http request goes to the proxy in absolute form
        path = f"http://{authority}{path}"
    return Target(tls, host, port, authority, path, proxy)


def _proxy_for(scheme: str, host: str) -> Proxy | None:
    import urllib.request  # ~10 ms, once per URL: not on the import path of `rlm --help`

    if urllib.request.proxy_bypass(host):
        return None
    value = urllib.request.getproxies().get(scheme)
    if not value:
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http" or not parts.hostname:  # as aiohttp: only plain-http proxies
        return None
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode("latin-1")).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, authorization)


class _Connection:
    __slots__ = ("reader", "writer", "http")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)

    def alive(self) -> bool:
        """Nothing came from the server while idle: no EOF, no error, no stray bytes (some servers
        send a 408 before closing an idle connection: it must not pass for the next answer). The
        StreamReader keeps what came in `_buffer`: private, but the only way to see it."""
        reader = self.reader
        return not (reader.at_eof() or reader.exception() or self.writer.is_closing() or reader._buffer)

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle keep-alive connections per origin, for the event loop that made them; `aclose()` closes
    them (connections in use close when their request ends)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[object, ...], list[_Connection]] = {}
        self._closed = False

    async def post(
        self,
        where: Target,
        body: bytes,
        headers: Mapping[str, str],
        context: ssl.SSLContext | None,
        on_progress: Callable[[], None],
        on_sent: Callable[[], None] | None = None,
    ) -> Response:
        """POST `body` with `headers` (Host, User-Agent, Accept(-Encoding), Content-Length are
        added unless given); `context` for https; `on_progress` is called whenever bytes arrive,
        `on_sent` once the request is written out."""
        request = h11.Request(method="POST", target=where.path, headers=_fields(where, body, headers))
        conn = self._take(where.key)
        try:
            if conn is not None:
                try:
                    return self._done(
                        where, conn, await _exchange(conn, request, body, on_progress, True, on_sent)
                    )
                except _Stale:
                    conn.close()
            conn = await _connect(where, context)
            return self._done(where, conn, await _exchange(conn, request, body, on_progress, False, on_sent))
        except BaseException:  # a failure or a cancellation: what is left on the line is unknown
            if conn is not None:
                conn.close()
            raise

    def _take(self, key: tuple[object, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have timed out
            if conn.alive():
                return conn
            conn.close()
        return None

    def _done(self, where: Target, conn: _Connection, response: Response) -> Response:
        http = conn.http
        # Reusable when both sides are done and nothing came after the answer (a stray 408...)
        clean = http.our_state is h11.DONE and http.their_state is h11.DONE and not http.trailing_data[0]
        if clean and not self._closed:
            http.start_next_cycle()
            self._idle.setdefault(where.key, []).append(conn)
        else:  # the server said Connection: close, an HTTP/1.0 answer, or the pool is closed
            conn.close()
        return response

    async def aclose(self) -> None:
        self._closed = True
        conns = [conn for idle in self._idle.values() for conn in idle]
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            try:
                await conn.writer.wait_closed()
            except (OSError, ssl.SSLError):  # closing: how the other end took it does not matter
                pass


def _fields(where: Target, body: bytes, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    given = {name.lower() for name in headers}
    fields = [
        (name, value)
        for name, value in (
            ("Host", where.authority),
            ("User-Agent", USER_AGENT),
            ("Accept", "application/json"),
            ("Accept-Encoding", "identity"),
            ("Content-Length", str(len(body))),
        )
        if name.lower() not in given
    ]
    fields.extend(headers.items())
    if where.proxy is not None and where.proxy.authorization and not where.tls:
        fields.append(("Proxy-Authorization", where.proxy.authorization))
    return fields


async def _connect(where: Target, context: ssl.SSLContext | None) -> _Connection:
    proxy = where.proxy
    host, port = (proxy.host, proxy.port) if proxy is not None else (where.host, where.port)
    direct_tls = context if where.tls and proxy is None else None
    try:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=direct_tls, server_hostname=where.host if direct_tls else None,
            happy_eyeballs_delay=HAPPY_EYEBALLS_S, limit=READ_CHUNK,
        )  # fmt: skip
        if where.tls and proxy is not None:
            try:
                await _tunnel(reader, writer, where, proxy)
                await writer.start_tls(context or ssl.create_default_context(), server_hostname=where.host)
            except BaseException:
                writer.close()
                raise
    except ConnectFailed:
        raise
    except (OSError, h11.RemoteProtocolError) as e:
        through = f" through the proxy {proxy.host}:{proxy.port}" if proxy is not None else ""
        raise ConnectFailed(f"cannot connect to {where.authority}{through}: {e}", _errno(e)) from e
    return _Connection(reader, writer)


def _errno(e: BaseException) -> int | None:
    """The error's errno. asyncio (3.11) folds one error per address (localhost: ::1 and 127.0.0.1)
    into OSError("Multiple exceptions: [Errno 111] ..., [Errno 111] ...") without one: when every
    address failed alike, that errno (retry.failure tells "connection refused" by it)."""
    code = getattr(e, "errno", None)
    if code is None and isinstance(e, OSError) and str(e).startswith("Multiple exceptions:"):
        codes = set(re.findall(r"\[Errno (-?\d+)\]", str(e)))
        if len(codes) == 1:
            return int(codes.pop())
    return code if isinstance(code, int) else None


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: Target, proxy: Proxy
) -> None:
    """CONNECT through the proxy to where.host:port; the proxy's refusal is a ConnectFailed."""
    http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    authority = f"[{where.host}]:{where.port}" if ":" in where.host else f"{where.host}:{where.port}"
    fields = [("Host", authority), ("User-Agent", USER_AGENT)]
    if proxy.authorization:
        fields.append(("Proxy-Authorization", proxy.authorization))
    writer.write(http.send(h11.Request(method="CONNECT", target=authority, headers=fields)) or b"")
    writer.write(http.send(h11.EndOfMessage()) or b"")
    await writer.drain()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise ConnectionResetError("the proxy closed the connection")
            http.receive_data(data)
        elif isinstance(event, h11.Response):
            if not 200 <= event.status_code < 300:
                reason = event.reason.decode("latin-1", "replace")
                raise ConnectFailed(
                    f"the proxy {proxy.host}:{proxy.port} answered {event.status_code} {reason} to CONNECT "
                    f"{authority}",
                    status_code=event.status_code,
                )
            return


async def _exchange(
    conn: _Connection,
    request: h11.Request,
    body: bytes,
    on_progress: Callable[[], None],
    reused: bool,
    on_sent: Callable[[], None] | None = None,
) -> Response:
    """One request and its whole answer on `conn`. On a reused connection, a close before any byte
    of the answer raises _Stale (the request is then sent again on a fresh one)."""
    http, reader = conn.http, conn.reader
    out = [http.send(request), http.send(h11.Data(data=body)), http.send(h11.EndOfMessage())]
    try:
        conn.writer.write(b"".join(part for part in out if part))
        await conn.writer.drain()
    except ConnectionError as e:
        if reused:
            raise _Stale from e
        raise
    if on_sent is not None:
        on_sent()
    received = eof = False
    response: h11.Response | None = None
    chunks: list[bytes] = []
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as e:
            if eof:
                raise ServerDisconnected(
                    "the server closed the connection before the answer was complete"
                ) from e
            raise
        if event is h11.NEED_DATA:
            try:
                data = await reader.read(READ_CHUNK)
            except ConnectionError as e:
                if reused and not received:
                    raise _Stale from e
                raise
            if data:
                received = True
                on_progress()
            elif reused and not received:
                raise _Stale
            else:
                eof = True
            http.receive_data(data)
        elif type(event) is h11.Data:
            chunks.append(event.data)
        elif type(event) is h11.Response:
            response = event
        elif type(event) is h11.EndOfMessage:
            break
        elif type(event) is h11.ConnectionClosed:
            raise ServerDisconnected("the server closed the connection without an answer")
        # InformationalResponse (1xx): the final answer follows
    assert response is not None  # h11 gives a Response before any Data or EndOfMessage
    headers = Headers(response.headers)
    return Response(
        response.status_code, headers, _decoded(b"".join(chunks), headers.get("content-encoding"))
    )


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """The body without its content coding: we ask for none, but a server may compress anyway."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    if encoding.strip().lower() in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompress(body, wbits=47)  # 32 + 15: gzip or zlib, by the header
        except zlib.error:
            return zlib.decompress(body, wbits=-15)  # "deflate" sent raw, as some servers do
    raise h11.RemoteProtocolError(f"an answer in an unsupported content coding: {encoding}")
