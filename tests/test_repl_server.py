"""The REPL server in a real local sandbox process, driven over the real framed protocol."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from rlmcli.errors import SandboxError
from rlmcli.repl.confine import SandboxLimits
from rlmcli.repl.process import ProcessSandbox
from rlmcli.repl.protocol import Repl

TEXT = "alpha line\nbeta ERROR one\ngamma\n"
OTHER = "x = 1\n# ERROR two\n"
CHARS = len("==> a.log <==\n" + TEXT + "==> b.py <==\n" + OTHER)


def make_context(tmp_path: Path) -> tuple[Path, Path]:
    """Two files concatenated with headers, as the loader writes them."""
    parts, spans, pos = [], {}, 0
    for name, text in (("a.log", TEXT), ("b.py", OTHER)):
        header = f"==> {name} <==\n"
        parts.append(header + text)
        spans[name] = [pos + len(header), pos + len(header) + len(text)]
        pos += len(header) + len(text)
    ctx = tmp_path / "context.txt"
    ctx.write_text("".join(parts), encoding="utf-8", newline="")
    idx = tmp_path / "index.json"
    idx.write_text(json.dumps({"files": spans}))
    return ctx, idx


async def echo_subcalls(prompts: list[str], model: str | None) -> list[str]:
    return [f"answer to {p}" for p in prompts]


def run_cells(tmp_path: Path, cells: list[str], **kwargs) -> list:
    """Start a REPL, run the cells in order, stop it; returns the CellResults."""
    ctx, idx = make_context(tmp_path)
    limits = SandboxLimits(memory=kwargs.pop("memory", 1024**3))
    timeout = kwargs.pop("cell_timeout", 10)

    async def main():
        repl = Repl(ProcessSandbox(limits), ctx, idx, cell_timeout=timeout, **kwargs)
        await repl.start()
        try:
            return [await repl.run_cell(code, on_subcalls=echo_subcalls) for code in cells]
        finally:
            await repl.close()

    return asyncio.run(main())


def test_namespace_persists_and_trailing_expression_is_shown(tmp_path):
    a, b = run_cells(tmp_path, ["n = len(context)", "n * 2"])
    assert a.output == "" and a.error is None
    assert b.output == f"{2 * CHARS}\n"


def test_files_and_spans_slice_the_context(tmp_path):
    (res,) = run_cells(tmp_path, ["print(repr(files['a.log'])); print(sorted(file_spans))"])
    assert res.output == f"{TEXT!r}\n['a.log', 'b.py']\n"


def test_print_and_os_system_are_captured_not_written_on_the_channel(tmp_path):
    (res,) = run_cells(
        tmp_path,
        [
            "import os, sys\nprint('py-out')\nsys.stderr.write('py-err\\n')\n"
            "os.system('echo shell-out; echo shell-err >&2')"
        ],
    )
    for piece in ("py-out", "py-err", "shell-out", "shell-err"):
        assert piece in res.output
    assert res.error is None


def test_grep_reports_path_and_line(tmp_path):
    (res,) = run_cells(tmp_path, ["for m in grep('ERROR'): print(m.path, m.line, m.text)"])
    assert res.output == "a.log 2 beta ERROR one\nb.py 2 # ERROR two\n"


def test_grep_says_when_it_stops_at_max_matches(tmp_path):
    # 'a' is on 3 content lines (twice on two of them) and in the '==> a.log <==' header.
    (res,) = run_cells(tmp_path, ["len(grep('a', max_matches=2)), len(grep('a', max_matches=None))"])
    assert "stopped at max_matches=2" in res.output
    assert res.output.endswith("(2, 3)\n")


def test_llm_query_and_batched_are_brokered_to_the_host(tmp_path):
    (res,) = run_cells(tmp_path, ["print(llm_query('q1')); print(llm_query_batched(['q2', 'q3']))"])
    assert res.output == "answer to q1\n['answer to q2', 'answer to q3']\n"


def test_infinite_loop_is_cut_at_the_cell_timeout_and_state_survives(tmp_path):
    a, b, c = run_cells(tmp_path, ["keep = 41", "while True: pass", "keep + 1"], cell_timeout=1)
    assert "TimeoutError" in b.error
    assert c.output == "42\n"


def test_timeout_survives_except_exception(tmp_path):
    (res, after) = run_cells(
        tmp_path,
        ["while True:\n    try:\n        sum(range(10**6))\n    except Exception:\n        pass", "'alive'"],
        cell_timeout=1,
    )
    assert "TimeoutError" in res.error
    assert after.output == "'alive'\n"


def test_output_is_truncated_with_a_marker(tmp_path):
    (res,) = run_cells(tmp_path, ["print('x' * 100_000_000)"], max_output_chars=1000)
    assert res.output.startswith("x" * 1000)
    assert "output truncated: 99999001 more characters" in res.output
    assert len(res.output) < 1200


def test_shell_output_flood_is_truncated(tmp_path):
    (res,) = run_cells(tmp_path, ["import os; os.system('yes | head -c 5000000')"], max_output_chars=500)
    assert "output truncated" in res.output
    assert len(res.output) < 700


def test_memory_bomb_is_an_error_not_a_crash(tmp_path):
    a, b = run_cells(tmp_path, ["big = bytearray(6 * 1024**3)", "'still here'"], memory=512 * 1024**2)
    assert "MemoryError" in a.error
    assert b.output == "'still here'\n"


def test_reserved_names_are_restored(tmp_path):
    a, b = run_cells(
        tmp_path, ["context = 'gone'; llm_query = None; FINAL = print", "len(context), llm_query('z')"]
    )
    assert set(a.restored) == {"context", "llm_query", "FINAL"}
    assert b.output == f"({CHARS}, 'answer to z')\n"


def test_final_and_final_var_from_code(tmp_path):
    a, b, c = run_cells(
        tmp_path, ["FINAL('done: 3')", "result = {'n': 3}\nFINAL_VAR('result')", "FINAL_VAR('nope')"]
    )
    assert a.final == "done: 3"
    assert b.final == '{"n": 3}'  # a dict or list is answered as JSON (what --schema parses)
    assert c.final is None and "no variable named 'nope'" in c.output


def test_a_value_json_cannot_hold_is_answered_as_its_str(tmp_path):
    a, b = run_cells(tmp_path, ["FINAL_VAR({'s': {1}})", "x = [float('nan'), 'é']\nFINAL(x)"])
    assert (a.final, b.final) == ("{'s': {1}}", "[nan, 'é']")


def test_sys_exit_is_refused(tmp_path):
    a, b = run_cells(tmp_path, ["import sys; sys.exit(1)", "'ok'"])
    assert "SystemExit" in a.error and b.output == "'ok'\n"


def test_environment_is_scrubbed(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak-123456")
    (res,) = run_cells(tmp_path, ["import os; print(sorted(os.environ))"])
    names = set(eval(res.output))
    assert names <= {"PATH", "LANG", "HOME", "TMPDIR", "LC_CTYPE"}
    assert "OPENAI_API_KEY" not in res.output


def test_dead_server_is_restarted_once_then_sandbox_error(tmp_path):
    ctx, idx = make_context(tmp_path)

    async def main():
        repl = Repl(ProcessSandbox(SandboxLimits()), ctx, idx, cell_timeout=5)
        await repl.start()
        try:
            await repl.run_cell("x = 1")
            first = await repl.run_cell("import os; os._exit(3)")
            after = await repl.run_cell("'x' in dir(), len(context) > 0")
            with pytest.raises(SandboxError):
                await repl.run_cell("import os; os._exit(4)")
            return first, after
        finally:
            await repl.close()

    first, after = asyncio.run(main())
    assert "restarted" in first.error and "lost" in first.error
    assert after.output == "(False, True)\n"


def test_host_backstop_kills_a_cell_that_disables_the_timer(tmp_path):
    ctx, idx = make_context(tmp_path)

    async def main():
        repl = Repl(ProcessSandbox(SandboxLimits()), ctx, idx, cell_timeout=1)
        await repl.start()
        try:
            hung = await repl.run_cell(
                "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass"
            )
            alive = await repl.run_cell("1 + 1")
            return hung, alive
        finally:
            await repl.close()

    hung, alive = asyncio.run(main())
    assert "did not stop" in hung.error and "restarted" in hung.error
    assert alive.output == "2\n"


def test_a_failed_load_is_an_error_not_a_dead_server(tmp_path):
    ctx, idx = make_context(tmp_path)

    async def main():
        repl = Repl(ProcessSandbox(SandboxLimits()), tmp_path / "missing.txt", idx)
        with pytest.raises(SandboxError, match="could not load the context: FileNotFoundError"):
            await repl.start()
        await repl.close()

    asyncio.run(main())


# ---------- H15: values without a text form, and errors, never kill the server ----------

UNPRINTABLE = (
    "class Bad:\n    def __str__(self):\n        raise RuntimeError('no text')\n    __repr__ = __str__\n"
)
BIG_INT = "big = 7 ** 6787\n"  # 5,736 digits: str() exceeds Python's int-to-str digit limit


def cells_and_gets(tmp_path: Path, cells: list[str], names: list[str], **kwargs) -> tuple[list, list, int]:
    """Run cells, then read variables as FINAL_VAR in a reply does; then a last cell that proves
    the server kept its namespace. Returns (cell results, (value, error) pairs, restarts)."""
    ctx, idx = make_context(tmp_path)

    async def main():
        repl = Repl(ProcessSandbox(SandboxLimits()), ctx, idx, cell_timeout=10, **kwargs)
        await repl.start()
        try:
            results = [await repl.run_cell(code, on_subcalls=echo_subcalls) for code in cells]
            values = [await repl.get(name) for name in names]
            results.append(await repl.run_cell("'alive', len(context)"))
            return results, values, repl.restarts
        finally:
            await repl.close()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "setup,call,expect",
    [
        (UNPRINTABLE + "x = Bad()", "FINAL_VAR('x')", "RuntimeError: no text"),
        (UNPRINTABLE + "x = Bad()", "FINAL(x)", "RuntimeError: no text"),
        (BIG_INT, "FINAL_VAR(big)", "Exceeds the limit"),
        (BIG_INT, "FINAL(big)", "Exceeds the limit"),
        ("huge = 'a' * 10_000_001", "FINAL_VAR('huge')", "at most 10000000"),
    ],
    ids=["FINAL_VAR raising str", "FINAL raising str", "FINAL_VAR 5736-digit int", "FINAL int", "huge"],
)
def test_final_of_a_value_without_a_text_form_is_an_error_in_the_cell(tmp_path, setup, call, expect):
    (defined, final, alive), _, restarts = cells_and_gets(tmp_path, [setup, call], [])
    assert defined.error is None
    assert final.final is None and expect in final.error and "ValueError" in final.error
    assert alive.output == f"('alive', {CHARS})\n" and restarts == 0


def test_final_var_in_a_reply_of_an_unprintable_value_is_an_error_for_the_model(tmp_path):
    cells = [UNPRINTABLE + "x = Bad()\n" + BIG_INT + "huge = 'h' * 10_000_001\nok = [1, 2]"]
    (_, alive), values, restarts = cells_and_gets(tmp_path, cells, ["x", "big", "huge", "ok", "missing"])
    (x, x_err), (big, big_err), (huge, huge_err), ok, missing = values
    assert x is None and "RuntimeError: no text" in x_err
    assert big is None and "Exceeds the limit" in big_err
    assert huge is None and "at most 10000000" in huge_err
    assert ok == ("[1, 2]", None)
    assert missing[0] is None and "not defined" in missing[1]
    assert alive.output == f"('alive', {CHARS})\n" and restarts == 0


def test_a_trailing_expression_or_exception_that_cannot_be_shown_is_an_error(tmp_path):
    cells = [
        UNPRINTABLE + "Bad()",  # repr() of the trailing expression raises
        BIG_INT + "big",  # repr() of a 5,736-digit int raises
        "class E(Exception):\n    def __str__(self):\n        raise E()\nraise E()",  # so does str(exc)
    ]
    (bad, big, exc, alive), _, restarts = cells_and_gets(tmp_path, cells, [])
    assert "RuntimeError: no text" in bad.error
    assert "Exceeds the limit" in big.error
    assert exc.error.rstrip().endswith("E: <exception str() failed>")
    assert alive.output == f"('alive', {CHARS})\n" and restarts == 0


def test_error_text_counts_toward_the_output_cap(tmp_path):
    # `raise ValueError(context)` of a big context: the error is cut like output, and the two
    # together stay within one cap (plus the truncation markers).
    (res,) = run_cells(
        tmp_path, ["print('p' * 5000)\nraise ValueError('v' * 1_000_000 + 'END')"], max_output_chars=1000
    )
    assert "error truncated" in res.error and res.error.rstrip().endswith("END")
    assert "output truncated" in res.output
    assert len(res.output) + len(res.error) < 1000 + 300


def test_llm_query_batched_beyond_the_protocol_caps_is_an_error_in_the_cell(tmp_path):
    many, long_prompt, too_big = run_cells(
        tmp_path,
        [
            "llm_query_batched([''] * 100_001)",
            "print(llm_query_batched(['a', 'x' * 8_000_001, 'b']))",
            "llm_query_batched(['y' * 7_000_000] * 10)",  # 70 MB: more than one frame may carry
            "'alive'",
        ],
    )[:3]
    assert "100001 prompts in one llm_query_batched call; at most 100000" in many.error
    assert long_prompt.error is None
    refused = "[llm_query error: the prompt is 8000001 characters; at most 8000000]"
    assert long_prompt.output == f"['answer to a', '{refused}', 'answer to b']\n"
    assert "too large to send" in too_big.error
