"""Knowing the server (issue 16, item 1): a base URL is asked once at start what it is (llama.cpp's
/props, the /v1/models list), and the run uses what it learned: no more sub-calls at once than the
server has slots unless --concurrency says so, and its window for the sub-call capacity and for
refusing oversize prompts unless --sub-window says so; one stderr line says what was learned.

The fake model server acts as a llama.cpp or vLLM server (fake_llm.LocalServer): it answers /props
or /v1/models as they do, serves `slots` requests at once and queues the rest, and counts the
requests it held at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import Fault, LocalServer, reply
from test_provider_errors import closed_port

from rlmcli.model import probe

CAPACITY = re.compile(r"can handle around ([\d,]+) characters")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("alpha\n" * 50)
    return path


def notices(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode().splitlines() if "server at" in line]


# -- what a server says ------------------------------------------------------------------------


def test_llama_cpp_props_give_slots_and_the_slot_window(fake_llm):
    fake_llm.local = LocalServer("llama.cpp", slots=4, window=4096)
    info = probe.probe(fake_llm.url, "fake-model")
    assert info == probe.ServerInfo(fake_llm.url, "llama.cpp", slots=4, window=4096)
    assert fake_llm.requests == []  # a GET or two; no chat request


def test_vllm_models_give_max_model_len(fake_llm):
    fake_llm.local = LocalServer("vllm", window=16384)
    info = probe.probe(fake_llm.url, "fake-model")
    assert info == probe.ServerInfo(fake_llm.url, "vLLM", slots=None, window=16384)


def test_a_plain_openai_server_says_nothing_we_use(fake_llm):
    info = probe.probe(fake_llm.url, "fake-model")
    assert info is not None and info.slots is None and info.window is None


def test_a_server_that_is_down_says_nothing():
    assert probe.probe(f"http://127.0.0.1:{closed_port()}/v1", "m") is None


def test_a_model_list_is_read_for_the_named_model():
    listing = {"data": [{"id": "a", "context_length": 1000}, {"id": "b", "context_length": 2000}]}
    assert probe.from_models("u", listing, "b").window == 2000
    assert probe.from_models("u", listing, "c").window is None  # several, none named: no guess
    old_llama = probe.from_props("u", {"total_slots": 2, "n_ctx": 512})
    assert old_llama == probe.ServerInfo("u", "llama.cpp", 2, 512)
    assert probe.from_props("u", {"error": "not found"}) is None


# -- what a run does with it -------------------------------------------------------------------


def fan_out(n: int) -> str:
    return reply("", f"r = llm_query_batched([f'q{{i}}' for i in range({n})])\nprint(len(r), r[0])")


def test_64_sub_calls_to_a_4_slot_server_run_4_at_once_with_no_retry(fake_llm, run_cli, data, tmp_path):
    """The issue's case: with the default flags, 64 sub-calls against 4 slots queued 60 in the server,
    where they timed out and were retried. Now no more than 4 are ever sent at once."""
    fake_llm.local = LocalServer("llama.cpp", slots=4, window=8192)
    fake_llm.sub = lambda prompt: Fault(text="ok " + prompt, delay=0.05)
    fake_llm.add_root(fan_out(64), "FINAL(done)")
    trace = tmp_path / "t.jsonl"
    # A request timeout shorter than the queue would take (16 rounds of 0.05 s): only requests that
    # are served at once, never queued behind 60 others, finish within it.
    ran = run_cli(ask_args(fake_llm, str(data), extra=["--request-timeout", "0.5", "--trace", str(trace)]))
    assert ran.returncode == 0, ran.stderr.decode()
    assert len(fake_llm.sub_requests) == 64  # each prompt once: no retry
    assert fake_llm.max_in_flight <= 4
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert not [e for e in events if e["event"] == "ModelRetry"]
    progress = [e for e in events if e["event"] == "SubcallProgress"]
    assert progress[-1]["done"] == 64 and progress[-1]["failed"] == 0
    assert "64 ok q0" in fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    (line,) = notices(ran.stderr)
    assert f"llama.cpp server at {fake_llm.url}, 4 slots, a window of 8,192 tokens per slot" in line
    assert "sub-calls run 4 at once (--concurrency to change)" in line


def test_an_explicit_concurrency_wins_over_the_slots(fake_llm, run_cli, data):
    fake_llm.local = LocalServer("llama.cpp", slots=2, window=8192)
    fake_llm.sub = lambda prompt: Fault(text="ok", delay=0.2)
    fake_llm.add_root(fan_out(8), "FINAL(done)")
    ran = run_cli(ask_args(fake_llm, str(data), extra=["--concurrency", "8"]))
    assert ran.returncode == 0, ran.stderr.decode()
    assert fake_llm.max_in_flight > 2  # sent beyond the slots: they wait in the server's queue
    assert "sub-calls run 8 at once" in notices(ran.stderr)[0]


def test_the_server_window_sizes_sub_calls_and_refuses_larger_prompts(fake_llm, run_cli, data):
    fake_llm.local = LocalServer("vllm", window=4096)
    code = "r = llm_query('x' * 40000)\nprint(r[:300])"
    fake_llm.add_root(reply("", code), "FINAL(done)")
    ran = run_cli(ask_args(fake_llm, str(data)))
    assert ran.returncode == 0, ran.stderr.decode()
    system = fake_llm.root_requests[0]["body"]["messages"][0]["content"]
    assert int(CAPACITY.search(system).group(1).replace(",", "")) < 4096 * 4  # not the 32K default's
    assert fake_llm.sub_requests == []  # refused in the cell: nothing was sent
    out = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    assert "its window: 4,096 tokens" in out and "nothing was sent" in out
    assert f"vLLM server at {fake_llm.url}, a window of 4,096 tokens" in notices(ran.stderr)[0]


def test_sub_window_flag_overrides_the_server(fake_llm, run_cli, data):
    fake_llm.local = LocalServer("vllm", window=4096)
    fake_llm.add_root(reply("", "r = llm_query('x' * 40000)\nprint(r[:100])"), "FINAL(done)")
    ran = run_cli(ask_args(fake_llm, str(data), extra=["--sub-window", "65536"]))
    assert ran.returncode == 0, ran.stderr.decode()
    assert len(fake_llm.sub_requests) == 1  # the flag's window admits it; the server then refuses
    out = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    assert "llm_query error" in out


def test_no_base_url_is_not_probed():
    probes = probe.start([("openai/gpt-4o-mini", None), ("anthropic/claude-sonnet-4-5", None)])
    assert list(probes.urls()) == [] and probes.result(None) is None
