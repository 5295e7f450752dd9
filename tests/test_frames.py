"""The host survives any frame (issue 8, H2-H4): forged frames from a fake REPL server, host-side caps
on what one reply can put into the next prompt, and the run's wall-clock deadline inside a cell.

Most tests drive `Repl` against a tiny fake server (FAKE_SERVER below) that follows the protocol
until the first command after loading, and answers it with a forged frame. The end-to-end tests
run `rlm ask` in-process, where a cell forges frames itself: it owns the REPL server process, so it
can write anything on the server's protocol channel.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
from conftest import MODEL, SENTINEL_KEY
from fake_llm import reply
from typer.testing import CliRunner

from rlmcli.agent import MAX_BLOCKS_PER_REPLY, TURN_OUTPUT_CHARS
from rlmcli.cli.app import app
from rlmcli.errors import LimitReached, SandboxError
from rlmcli.record.history import History
from rlmcli.repl.confine import server_path
from rlmcli.repl.frames import MARKER_SLACK
from rlmcli.repl.protocol import Repl

FAKE_SERVER = r"""
import json, struct, sys

def frame(obj):
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data

def raw(body):
    return struct.pack(">I", len(body)) + body

def result(**fields):
    base = {"type": "result", "output": "", "error": None, "final": None, "restored": [], "duration": 0.1}
    return frame(dict(base, **fields))

def deep(n):
    return b"[" * n + b"]" * n

def llm_query(**fields):
    return frame(dict({"type": "llm_query", "id": 1, "prompts": ["p"], "model": None}, **fields))

def recv():
    head = sys.stdin.buffer.read(4)
    if len(head) < 4:
        sys.exit(0)
    return json.loads(sys.stdin.buffer.read(struct.unpack(">I", head)[0]))

def send(data):
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        sys.exit(0)

forged = eval(sys.argv[1])
if sys.argv[2] == "ready":
    send(forged)
send(frame({"type": "ready", "python": "fake"}))
recv()
send(frame({"type": "loaded", "chars": 0, "files": 0}))
while True:
    if recv().get("op") in ("exec", "get"):
        send(forged)
"""


class ScriptSandbox:
    """A Sandbox (see rlmcli/repl/protocol.py) that runs a Python script as a plain child: the fake server, or
    the real one without any confinement (these tests are about the protocol, not isolation)."""

    name = "test"

    def __init__(self, *argv: str):
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        await self.stop()
        self.starts += 1
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        return self.proc.stdout, self.proc.stdin

    def add_input(self, host_path: Path) -> None:
        pass

    def visible_path(self, host_path: Path) -> str:
        return str(host_path)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    def exit_description(self) -> str:
        return "the test server was stopped"


def fake_repl(tmp_path: Path, forged: str, when: str = "command", **kwargs) -> tuple[Repl, ScriptSandbox]:
    """A Repl on the fake server that answers the first command (or says hello) with `forged`."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    (tmp_path / "context.txt").write_text("ctx\n")
    sandbox = ScriptSandbox(str(script), forged, when)
    repl = Repl(sandbox, tmp_path / "context.txt", tmp_path / "index.json", **kwargs)
    return repl, sandbox


def run(coro):  # noqa: ANN001, ANN201
    """asyncio.run with a generous bound: a host that hangs fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, 120))


# name -> the fake server's answer (a Python expression for the bytes it sends)
BAD_FRAMES = {
    "duration is a string": 'result(duration="abc")',
    "duration is NaN": 'result(duration=float("nan"))',
    "duration is a 400-digit number": "result(duration=10**400)",
    "duration is negative": "result(duration=-1)",
    "output is a number": "result(output=5)",
    "output is missing": 'frame({"type": "result", "error": None, "final": None, "restored": []})',
    "error is a list": "result(error=[])",
    "restored is a number": "result(restored=5)",
    "restored holds numbers": "result(restored=[1, 2])",
    "final is a number": "result(final=5)",
    "final is over its cap": 'result(final="f" * 10_000_001)',
    "prompts is a number": "llm_query(prompts=5)",
    "prompts holds a number": 'llm_query(prompts=["a", 5])',
    "too many prompts": 'llm_query(prompts=[""] * 100_001)',
    "a prompt over its cap": 'llm_query(prompts=["p" * 8_000_001])',
    "id is a string": 'llm_query(id="x")',
    "id is a boolean": "llm_query(id=True)",
    "model is a number": "llm_query(model=5)",
    "200k-deep nested JSON": "raw(deep(200_000))",
    "200k-deep nesting in a field": """raw(b'{"type": "result", "output": ' + deep(200_000) + b"}")""",
    "a 100 MB frame": 'raw(b"[" + b" " * (100 * 2**20) + b"]")',
    "a header claiming 4 GB": 'struct.pack(">I", 2**32 - 1) + b"{}"',
    "garbage bytes": "raw(bytes(range(256)))",
    "invalid UTF-8": """raw(b'{"type": "\\xff\\xfe"}')""",
    "a 5,000-digit integer": """raw(b'{"type": "result", "id": ' + b"9" * 5000 + b"}")""",
    "a frame that is a list": "frame([1, 2, 3])",
    "a frame that is a string": 'frame("result")',
    "no type": 'frame({"output": ""})',
    "a type that is a list": 'frame({"type": ["result"]})',
    "an unknown type": 'frame({"type": "surprise"})',
    "the wrong type for the command": 'frame({"type": "value", "value": "v"})',
}


@pytest.mark.parametrize("forged", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_a_bad_frame_restarts_the_repl_once_and_a_second_is_a_sandbox_error(tmp_path, forged):
    repl, sandbox = fake_repl(tmp_path, forged)

    async def main():
        await repl.start()
        try:
            first = await repl.run_cell("x = 1")
            with pytest.raises(SandboxError) as second:
                await repl.run_cell("x = 2")
            return first, second.value
        finally:
            await repl.close()

    first, second = run(main())
    # The model is told what happened and that its variables are gone; the run goes on.
    assert "broke the protocol" in first.error and "REPL was restarted" in first.error
    assert first.final is None and first.output == ""
    assert "failed again" in str(second) and "broke the protocol" in str(second)
    assert sandbox.starts == 2 and sandbox.proc is None


def test_a_bad_frame_in_answer_to_get_restarts_the_repl(tmp_path):
    repl, sandbox = fake_repl(tmp_path, "result(duration=5)")  # a result where a value was due

    async def main():
        await repl.start()
        try:
            value, error = await repl.get("x")
            with pytest.raises(SandboxError, match="failed again"):
                await repl.get("x")
            return value, error
        finally:
            await repl.close()

    value, error = run(main())
    assert value is None and "restarted" in error and sandbox.starts == 2


@pytest.mark.parametrize("forged", ['frame({"type": "ready", "python": 5})', 'frame({"type": "loaded"})'])
def test_a_bad_first_frame_is_a_sandbox_error_at_start(tmp_path, forged):
    repl, sandbox = fake_repl(tmp_path, forged, when="ready")

    async def main():
        with pytest.raises(SandboxError, match="failed to start.*broke the protocol"):
            await repl.start()
        await repl.close()

    run(main())
    assert sandbox.proc is None


# Frames of the right shape whose strings are too long are cut on the host, as the server cuts
# them: output and error share one cap (the error keeps up to half); lone surrogates are replaced.
CAP = 1000
CLIPPED = {
    "long output": ('result(output="o" * 1_000_000)', "o" * 600, None),
    "long error": ('result(error="e" * 1_000_000)', "", "e" * 300),
    "both long": ('result(output="o" * 10**6, error="e" * 10**6)', "o" * 200, "e" * 300),
    "within the cap": ('result(output="fine\\n", error="Boom")', "fine\n", "Boom"),
    "lone surrogates": ('result(output="\\ud800 lone", final="\\udfff")', "? lone", None),
}


@pytest.mark.parametrize("forged,output,error", list(CLIPPED.values()), ids=list(CLIPPED))
def test_oversized_strings_in_a_frame_are_cut_on_the_host(tmp_path, forged, output, error):
    repl, _ = fake_repl(tmp_path, forged, max_output_chars=CAP)

    async def main():
        await repl.start()
        try:
            return await repl.run_cell("x = 1")
        finally:
            await repl.close()

    res = run(main())
    assert repl.restarts == 0  # well-formed: cut, not refused
    assert res.output.startswith(output) and (res.error is None) == (error is None)
    shown = res.output + (res.error or "")
    if len(shown) > 100:
        assert "truncated" in shown and len(shown) <= CAP + 2 * MARKER_SLACK + 2 * 100
    else:
        assert res.output == output and res.error == error
    if error is not None:
        assert res.error.startswith(error)
    if "final" in forged:
        assert res.final == "?"


# ---------- the run's deadline inside a cell (H4, the REPL's side) ----------


def real_repl(tmp_path: Path) -> tuple[Repl, ScriptSandbox]:
    (tmp_path / "context.txt").write_text("ctx\n")
    (tmp_path / "index.json").write_text(json.dumps({"files": {}}))
    sandbox = ScriptSandbox("-I", str(server_path()))
    return Repl(sandbox, tmp_path / "context.txt", tmp_path / "index.json", cell_timeout=60), sandbox


async def quick(prompts: list[str], model: str | None) -> list[str]:
    await asyncio.sleep(0.05)
    return ["ok"] * len(prompts)


async def hung(prompts: list[str], model: str | None) -> list[str]:
    await asyncio.sleep(3600)
    return []


@pytest.mark.parametrize("handler", [quick, hung], ids=["sub-call loop", "hung sub-call"])
def test_the_run_deadline_stops_a_cell_whose_time_goes_to_sub_calls(tmp_path, handler):
    # The cell's own timer (60 s) excludes sub-call waits, so only the run's deadline can stop it.
    repl, sandbox = real_repl(tmp_path)

    async def main():
        await repl.start()
        try:
            with pytest.raises(LimitReached) as stopped:
                await repl.run_cell(
                    "while True:\n    llm_query('again')",
                    deadline=time.monotonic() + 1.0,
                    on_subcalls=handler,
                )
            return stopped.value
        finally:
            await repl.close()

    stopped = run(main())
    assert stopped.limit == "timeout" and "--timeout" in str(stopped)
    assert sandbox.proc is None  # the server was killed, not left running mid-cell


def test_a_deadline_already_passed_runs_nothing(tmp_path):
    calls = []

    async def counting(prompts: list[str], model: str | None) -> list[str]:
        calls.append(prompts)
        return ["ok"] * len(prompts)

    repl, _ = real_repl(tmp_path)

    async def main():
        await repl.start()
        try:
            with pytest.raises(LimitReached):
                await repl.run_cell("llm_query('never')", deadline=time.monotonic() - 1, on_subcalls=counting)
        finally:
            await repl.close()

    run(main())
    assert calls == []


def test_a_limit_raised_by_the_sub_call_handler_leaves_run_cell_and_close_does_not_hang(tmp_path):
    async def breached(prompts: list[str], model: str | None) -> list[str]:
        raise LimitReached("subcalls", "sub-call limit of 3 reached")

    repl, sandbox = real_repl(tmp_path)

    async def main():
        await repl.start()
        with pytest.raises(LimitReached, match="sub-call limit"):
            await repl.run_cell("llm_query('one')", on_subcalls=breached)
        await repl.close()  # the server still waits for its reply: close() must not wait for it

    run(main())
    assert sandbox.proc is None and repl.restarts == 0


# ---------- end to end: `rlm ask`, where the cell forges the frames ----------

# A cell can find the server's protocol channel among the live objects and write any bytes on it.
FORGE = (
    "import gc, json, struct\n"
    "channel = next(o for o in gc.get_objects() if type(o).__name__ == 'Channel')\n"
    "def forge(body):\n"
    "    channel.fout.write(struct.pack('>I', len(body)) + body)\n"
)
FORGED_IN_CELL = {
    "duration is a string": (
        "forge(json.dumps({'type': 'result', 'output': 'x', 'error': None, 'final': None, "
        "'restored': [], 'duration': 'abc'}).encode())"
    ),
    "prompts is a number": "forge(json.dumps({'type': 'llm_query', 'id': 1, 'prompts': 5}).encode())",
    "200k-deep nested JSON": "forge(b'[' * 200_000 + b']' * 200_000)",
    "a header claiming 4 GB": "channel.fout.write(b'\\xff\\xff\\xff\\xff{}')",
}


@pytest.fixture
def rlm(tmp_path, monkeypatch):
    """invoke(args) -> click Result of `rlm ...` in this process, with RLM_HOME in tmp_path."""
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "rlm-home"
    env = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "none.toml"), "RLM_HOME": str(home)}
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RLM_HOME", str(home))  # History() reads it in the test too
    (tmp_path / "in.txt").write_text("data\n")

    def invoke(fake, *extra: str):  # noqa: ANN001, ANN202
        args = ["ask", "in.txt", "What is in there?", "--model", MODEL, "--api-base", fake.url]
        return CliRunner().invoke(
            app, [*args, "--sandbox", "local", "--json", "--max-retries", "0", *extra], env=env
        )

    return invoke


def last_user_message(request: dict) -> str:
    return [m for m in request["body"]["messages"] if m["role"] == "user"][-1]["content"]


@pytest.mark.parametrize("forged", list(FORGED_IN_CELL.values()), ids=list(FORGED_IN_CELL))
def test_a_cell_that_forges_a_frame_gets_a_restarted_repl_and_the_run_answers(fake_llm, rlm, forged):
    fake_llm.add_root(reply("", FORGE + forged), reply("", "print('alive', len(context))"), "FINAL(survived)")
    result = rlm(fake_llm)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["answer"] == "survived" and out["exit_reason"] == "final"
    told = last_user_message(fake_llm.root_requests[1])
    assert "broke the protocol" in told and "REPL was restarted" in told
    assert "alive 5" in last_user_message(fake_llm.root_requests[2])
    (row,) = History().recent()
    assert row.exit_reason == "final"


def test_a_second_forged_frame_ends_the_run_with_exit_5_and_a_finished_record(fake_llm, rlm):
    bad = FORGE + FORGED_IN_CELL["duration is a string"]
    fake_llm.add_root(reply("Partial: two bad frames ahead.", bad), reply("", bad), "FINAL(never)")
    result = rlm(fake_llm)
    assert result.exit_code == 5, result.output
    out = json.loads(result.stdout)
    assert out["exit_reason"] == "sandbox_error" and "failed again" in out["message"]
    assert out["partial_answer"] == "Partial: two bad frames ahead." and out["partial"] is True
    (row,) = History().recent()
    assert row.exit_reason == "sandbox_error"


# (reply's blocks, max output chars) -> (cells run, the note the model gets)
BLOCK_CASES = [
    (
        [f"print({n})" for n in range(2000)],
        20000,
        MAX_BLOCKS_PER_REPLY,
        "blocks 17-2000 of 2000 were not run",
    ),
    (["print('z' * 40_000)"] * 12, 20000, 5, "blocks 6-12 of 12 were not run"),
    (["print('z' * 400_000)"] * 3, 200_000, 2, "blocks 3-3 of 3 were not run"),
    (["print('small')"] * 3, 20000, 3, None),
]


@pytest.mark.parametrize(
    "blocks,cap,ran,note", BLOCK_CASES, ids=["2000 blocks", "flood", "raised cap", "few"]
)
def test_one_reply_puts_a_bounded_amount_into_the_next_prompt(fake_llm, rlm, blocks, cap, ran, note):
    fake_llm.add_root("\n".join(reply("", code) for code in blocks), "FINAL(done)")
    # A window that holds what the turn sends: compaction (compact.py) must not cut it here.
    result = rlm(fake_llm, "--max-output-chars", str(cap), "--root-window", "2000000")
    assert result.exit_code == 0, result.output
    told = last_user_message(fake_llm.root_requests[1])
    assert told.count("REPL output (block") == ran
    assert len(told) <= max(TURN_OUTPUT_CHARS, 2 * cap) + 2000
    if note is None:
        assert "were not run" not in told
    else:
        assert note in told


def test_timeout_stops_an_llm_query_loop_within_a_second_of_the_limit(fake_llm, rlm):
    # Acceptance of issue 8: `--timeout 5` with an llm_query loop stops within 6 s.
    fake_llm.latency = 0.05
    fake_llm.add_root(reply("Looping.", "while True:\n    llm_query('again')"), "FINAL(never)")
    result = rlm(fake_llm, "--timeout", "5", "--cell-timeout", "600")
    assert result.exit_code == 3, result.output
    out = json.loads(result.stdout)
    assert out["exit_reason"] == "timeout"
    print(f"--timeout 5 with an llm_query loop stopped after {out['elapsed_s']}s")
    assert out["elapsed_s"] < 6
    (row,) = History().recent()
    assert row.exit_reason == "timeout"


def test_final_var_of_an_unprintable_value_is_told_to_the_model_and_the_run_goes_on(fake_llm, rlm):
    # H15: str(x) raises (or x is a 5,736-digit int): the REPL lives, the model hears why.
    unprintable = "class Bad:\n    def __str__(self):\n        raise RuntimeError('no text')\n"
    unprintable += "x = Bad()\nbig = 7 ** 6787"
    fake_llm.add_root(
        reply("", unprintable) + "\nFINAL_VAR(x)",  # the code before the FINAL line: it runs first
        reply("", "FINAL_VAR('big')"),
        reply("", "x = 'kept'"),
        "FINAL_VAR(x)",
    )
    result = rlm(fake_llm)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["answer"] == "kept"
    assert "FINAL_VAR(x) failed" in last_user_message(fake_llm.root_requests[1])
    assert "RuntimeError: no text" in last_user_message(fake_llm.root_requests[1])
    assert "Exceeds the limit" in last_user_message(fake_llm.root_requests[2])
