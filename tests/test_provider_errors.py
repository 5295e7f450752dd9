"""A model server that cannot be reached, or is not an OpenAI API: one line naming the URL, what
happened and what to check, exit 4, no library reprs; and no backoff series where retrying cannot
help (a refused connection or a failed lookup gets one quick retry, a web page none).

Through the CLI: the root call takes litellm's path, a sub-call the direct one (openai_http.py);
both end in the same words.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_llm import Fault, LocalServer, default_usage, reply

MODEL = "openai/local-model"  # no price, no provider key needed beyond the planted one


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("alpha\n")
    return path


def ask(base: str, data: Path, *extra: str) -> list[str]:
    return ["ask", str(data), "What is there?", "-m", MODEL, "--api-base", base, "--sandbox", "local", *extra]


def one_error_line(proc) -> str:
    """Exit 4 and exactly one `rlm: error:` line, with no traceback and no object reprs anywhere."""
    err = proc.stderr.decode()
    assert proc.returncode == 4, err
    errors = [line for line in err.splitlines() if line.startswith("rlm: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "object at 0x" not in err and "ssl:" not in err, err
    return errors[0]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebPage(BaseHTTPRequestHandler):
    """A web server that is not an OpenAI API: every POST gets an HTML 404 page."""

    posts: list[str]

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self.posts.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        page = b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def web_server() -> Iterator[tuple[str, list[str]]]:
    posts: list[str] = []
    handler = type("Handler", (WebPage,), {"posts": posts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", posts
    finally:
        server.shutdown()
        server.server_close()


def test_connection_refused_one_line_with_the_url_and_one_quick_retry(run_cli, data):
    base = f"http://127.0.0.1:{closed_port()}/v1"
    line = one_error_line(run_cli(ask(base, data)))
    assert f"{MODEL}: {base}: connection refused after 2 attempts" in line  # not 5 (--max-retries 4)
    assert line.endswith("check that the server is running and listens there")


def test_unknown_host_one_line_with_the_url(run_cli, data):
    base = "http://rlm-test-no-such-host.invalid/v1"
    line = one_error_line(run_cli(ask(base, data)))
    assert f"{base}: the host name does not resolve after 2 attempts" in line
    assert line.endswith("check the host name in the URL")


def test_tls_to_a_plain_http_server_one_line(fake_llm, run_cli, data):
    base = fake_llm.url.replace("http://", "https://")
    line = one_error_line(run_cli(ask(base, data)))
    assert f"{base}: the TLS handshake failed" in line and "attempts" not in line  # not retried
    assert "check http:// or https:// in the URL" in line
    assert fake_llm.requests == []


def test_no_response_in_time_names_the_timeout_and_the_flag(fake_llm, run_cli, data):
    fake_llm.add_root(Fault(delay=5, text="FINAL(late)"))
    line = one_error_line(run_cli(ask(fake_llm.url, data, "--request-timeout", "0.5", "--max-retries", "0")))
    assert f"{fake_llm.url}: nothing received for 0.5 s" in line
    assert "raise --request-timeout" in line and "Request Timeout" not in line  # ours, not an HTTP 408


def test_a_web_server_that_is_not_an_openai_api_is_not_retried(web_server, run_cli, data):
    base, posts = web_server
    line = one_error_line(run_cli(ask(base, data)))
    assert f"{base}: not an OpenAI-compatible API: 404 Not Found with a web page" in line
    assert "ending in /v1" in line and "<html" not in line
    assert posts == ["/v1/chat/completions"]  # one request: a web page does not turn into an API


def test_a_sub_call_to_a_refused_server_is_the_same_line_in_the_cell(fake_llm, run_cli, data):
    """The direct sub-call path: the cell gets the error string; the run goes on and answers."""
    sub_base = f"http://127.0.0.1:{closed_port()}/v1"
    fake_llm.add_root(reply("", "print(llm_query('hello'))"), "FINAL(done)")
    args = ask(fake_llm.url, data, "--sub-model", "openai/local-sub", "--sub-api-base", sub_base, "--json")
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["answer"] == "done"
    seen = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    expected = f"openai/local-sub: {sub_base}: connection refused after 2 attempts; check that the server"
    assert expected in seen and "ssl:" not in seen, seen


# -- a prompt beyond the server's window, an Ollama model string against an OpenAI server ------


@pytest.mark.parametrize("server", ["llama.cpp", "vllm"])
def test_a_root_prompt_over_the_server_window_says_the_window_the_size_and_the_flag(
    fake_llm, run_cli, data, server
):
    """The first root prompt (the system prompt alone is ~2K tokens) exceeds a 1,000-token window:
    the server's 400 (in its own words) becomes one line with both sizes and what to change."""
    fake_llm.local = LocalServer(server, window=1000)
    fake_llm.add_root("FINAL(never)")
    line = one_error_line(run_cli(ask(fake_llm.url, data)))
    sent = default_usage(fake_llm.root_requests[0]["body"], "")[0]
    assert (
        f"{MODEL}: {fake_llm.url}: the request ({sent:,} tokens) exceeds the server's context window " in line
    )
    assert "(1,000 tokens)" in line and "--root-window 1000" in line and "--sub-window 1000" in line
    assert "BadRequestError" not in line and "exceed_context_size_error" not in line
    assert len(fake_llm.root_requests) == 1  # a 400 is not retried


def test_a_sub_call_over_the_server_window_is_an_error_string_with_the_fix(fake_llm, run_cli, data):
    """The server's window is larger than --sub-window says: the prompt is sent, refused by the
    server, and the cell gets the same words; the run goes on."""
    fake_llm.local = LocalServer("llama.cpp", window=6000)
    fake_llm.add_root(reply("", "print(llm_query('word ' * 6000))"), "FINAL(done)")
    proc = run_cli(ask(fake_llm.url, data, "--sub-window", "65536", "--json"))
    assert proc.returncode == 0, proc.stderr.decode()
    seen = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    assert "[llm_query error: model provider error: " in seen
    assert "exceeds the server's context window (6,000 tokens)" in seen and "--sub-window 6000" in seen


def test_an_ollama_model_against_an_openai_server_suggests_openai_and_v1(fake_llm, run_cli, data):
    base = fake_llm.url.removesuffix("/v1")  # as an Ollama base is written
    args = [
        "ask",
        str(data),
        "What is there?",
        "-m",
        "ollama/qwen2.5",
        "--api-base",
        base,
        "--sandbox",
        "local",
    ]
    line = one_error_line(run_cli(args))
    assert f"ollama/qwen2.5: {base}: 404 Not Found: not Ollama's API" in line
    assert line.endswith(f"(for an OpenAI-compatible server use --model openai/qwen2.5 --api-base {base}/v1)")
    assert [s["path"] for s in fake_llm.stray] == ["/api/generate"]  # litellm's Ollama route: not retried
