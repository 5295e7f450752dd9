"""Verified evidence (--cite): answers cite input lines by handle, the host cuts the text itself and
checks what the model typed (quotes, path:N references). Scripted runs through the real CLI, the
REPL server over the real protocol, and the host module (rlmcli/cite/) on its own."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import reply

SOURCE_LINE = re.compile(r"^\[(\d+)\] (.+):(\d+)(?:-(\d+))?$")


def sandbox_args(fake, sandbox: str, image: str | None, *paths: str, extra=()) -> list[str]:
    args = ask_args(fake, *paths, extra=extra)
    args = [a if a != "local" else sandbox for a in args]
    return args + (["--image", image] if image else [])


@pytest.fixture(params=["local", "docker"])
def sandbox(request) -> tuple[str, str | None]:
    """Each end-to-end run in both sandboxes: bubblewrap and Docker."""
    if request.param == "docker":
        return "docker", request.getfixturevalue("docker_image")
    return "local", None


def sources(stdout: str) -> list[tuple[int, str, int, int, list[str]]]:
    """The Sources block printed after the answer: (marker, path, start, end, shown lines)."""
    lines = stdout.split("\n")
    at = lines.index("Sources:")
    found = []
    for line in lines[at + 1 :]:
        m = SOURCE_LINE.match(line)
        if m:
            start = int(m.group(3))
            found.append((int(m.group(1)), m.group(2), start, int(m.group(4) or start), []))
        elif line.startswith("    "):
            found[-1][4].append(line[4:])
    return found


def file_line(path: Path, number: int) -> bytes:
    """Line `number` of a file as bytes, without its terminator (LF or CRLF)."""
    return path.read_bytes().split(b"\n")[number - 1].removesuffix(b"\r")


def test_loghub_run_cites_two_lines_and_prints_them_byte_for_byte(fake_llm, run_cli, shared_data, sandbox):
    logs = shared_data / "loghub"
    fake_llm.add_root(
        reply("", "hits = grep(r'WARN dfs\\.DataNode')\nfirst, second = cite(hits[0]), cite(hits[1])\n"
                  "FINAL(f'The first DataNode warnings are {first} and {second}.')"),
    )  # fmt: skip
    proc = run_cli(sandbox_args(fake_llm, *sandbox, str(logs), extra=["--include", "*.log"]))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert out.startswith("The first DataNode warnings are [1] and [2].\n\nSources:\n")
    cited = sources(out)
    assert [c[0] for c in cited] == [1, 2]
    for _, path, start, end, shown in cited:
        assert start == end and len(shown) == 1
        assert shown[0].encode() == file_line(Path(path), start)  # the file's line, byte for byte
        assert b"WARN dfs.DataNode" in file_line(Path(path), start)
    assert "unverified" not in proc.stderr.decode()


def test_json_has_each_citation_with_the_files_digest_and_bytes(fake_llm, run_cli, shared_data):
    hdfs = shared_data / "loghub" / "HDFS"
    fake_llm.add_root(
        reply("", "where = locate('Got exception while serving')\n"
                  "m = cite(where[0], where[1], where[1] + 2)\nFINAL(f'Serving failed {m}.')"),
    )  # fmt: skip
    proc = run_cli(ask_args(fake_llm, str(hdfs), extra=["--json", "--include", "*.log"]))
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["unverified"] == []
    (c,) = out["citations"]
    data = (hdfs / "HDFS_2k.log").read_bytes()
    assert c["path"].endswith("HDFS/HDFS_2k.log") and c["marker"] == 1 and c["verified"] is True
    assert c["sha256"] == hashlib.sha256(data).hexdigest()
    first = data.split(b"\n").index(next(x for x in data.split(b"\n") if b"Got exception while serving" in x))
    assert (c["start_line"], c["end_line"]) == (first + 1, first + 3)
    assert data[c["byte_start"] : c["byte_end"]] == c["text"].encode()
    assert c["text"].encode() == b"\n".join(data.split(b"\n")[first : first + 3]).removesuffix(b"\r")


# ---------- what the model typed is checked ----------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "app.log"
    path.parent.mkdir()
    path.write_bytes(b"alpha started\nbeta ERROR disk full on /var\ngamma   done   ok\n")
    (path.parent / "tool.py").write_text("x = 1\ny = 2\n")
    return path


CITE_AND_ANSWER = """\
m = cite(grep('disk full')[0])
FINAL('It failed: "beta ERROR disk full on /var" ' + m + ' then "the database exploded" and `gamma done ok`.')
"""


def test_a_quote_that_is_not_in_the_input_is_flagged_on_stderr_and_in_json(fake_llm, run_cli, log):
    fake_llm.add_root(reply("", CITE_AND_ANSWER), reply("", CITE_AND_ANSWER))
    proc = run_cli(ask_args(fake_llm, str(log)))
    assert proc.returncode == 0, proc.stderr.decode()  # check: reported, not refused
    err = proc.stderr.decode()
    assert 'unverified quote "the database exploded": not found in the input' in err
    assert "beta ERROR" not in err  # the true quote is not flagged
    assert 'quote "gamma done ok" matches the input only with whitespace normalised' in err
    out = proc.stdout.decode()
    assert "Sources:\n[1] " in out and "    beta ERROR disk full on /var" in out

    proc = run_cli(ask_args(fake_llm, str(log), extra=["--json"]))
    document = json.loads(proc.stdout)
    assert document["unverified"] == [
        {"kind": "quote", "text": "the database exploded", "reason": "not found in the input"}
    ]
    assert [c["text"] for c in document["citations"]] == ["beta ERROR disk full on /var"]


UNCITED = "FINAL('It failed because \"the database exploded\".')"


def last_user_message(request: dict) -> str:
    return [m for m in request["body"]["messages"] if m["role"] == "user"][-1]["content"]


def test_require_gives_one_repair_turn_then_exit_6(fake_llm, run_cli, log):
    fake_llm.add_root(reply("", UNCITED), reply("", UNCITED))
    proc = run_cli(ask_args(fake_llm, str(log), extra=["--cite", "require", "--json"]))
    assert proc.returncode == 6, proc.stderr.decode()
    document = json.loads(proc.stdout)
    assert document["exit_reason"] == "invalid_answer" and document["answer"] is None
    assert document["partial_answer"] == 'It failed because "the database exploded".'
    assert document["unverified"][0]["text"] == "the database exploded"
    assert len(fake_llm.root_requests) == 2  # the answer, one repair turn, no third chance
    repair = last_user_message(fake_llm.root_requests[1])
    assert 'unverified quote "the database exploded": not found in the input' in repair
    assert "cites no span" in repair and "cite(" in repair
    assert "rlm: error: invalid answer:" in proc.stderr.decode()


def test_require_accepts_the_repaired_answer(fake_llm, run_cli, log):
    fixed = "m = cite(locate('disk full'))\nFINAL('The disk was full ' + m)"
    fake_llm.add_root(reply("", UNCITED), reply("", fixed))
    proc = run_cli(ask_args(fake_llm, str(log), extra=["--cite", "require"]))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("The disk was full [1]\n\nSources:\n[1] ")
    assert proc.stdout.decode().endswith(":2\n    beta ERROR disk full on /var\n")


def test_path_references_out_of_range_or_not_loaded_are_flagged(fake_llm, run_cli, log):
    answer = (
        "FINAL('See app.log:2, app.log:9, tool.py:1-2, missing/nothing.log:3 at 10:32:01 "
        "via db.example.com:5432.')"
    )
    fake_llm.add_root(reply("", answer))
    proc = run_cli(ask_args(fake_llm, str(log.parent), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    flagged = {(u["kind"], u["text"]): u["reason"] for u in json.loads(proc.stdout)["unverified"]}
    assert flagged == {
        ("reference", "app.log:9"): f"line 9 is past the end of {log.parent}/app.log (3 lines)",
        ("reference", "missing/nothing.log:3"): "missing/nothing.log is not a loaded file",
    }
    err = proc.stderr.decode()
    assert "unverified reference app.log:9" in err and "unverified reference missing/nothing.log:3" in err


def test_a_marker_that_names_no_span_is_reported(fake_llm, run_cli, log):
    fake_llm.add_root(reply("", "m = cite('app.log', 1)\nFINAL('Started ' + m + ', then [7].')"))
    proc = run_cli(ask_args(fake_llm, str(log), extra=["--json"]))
    document = json.loads(proc.stdout)
    assert [c["marker"] for c in document["citations"]] == [1]
    assert document["unverified"] == [
        {"kind": "marker", "text": "[7]", "reason": "names no span registered with cite()"}
    ]


# ---------- stdin, both sandboxes ----------


def test_stdin_input_is_cited_as_dash(fake_llm, run_cli, sandbox):
    data = b"first line\r\nsecond line with ERROR\r\nthird\r\n"
    fake_llm.add_root(reply("", "m = cite('-', 2)\nn = cite(locate('third'))\nFINAL('Error ' + m + n)"))
    proc = run_cli(sandbox_args(fake_llm, *sandbox, "-"), input=data)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == (
        "Error [1][2]\n\nSources:\n[1] <stdin>:2\n    second line with ERROR\n[2] <stdin>:3\n    third\n"
    )


# ---------- off, the prompt, the record ----------


def test_cite_off_teaches_nothing_and_prints_no_sources(fake_llm, run_cli, log):
    fake_llm.add_root(reply("", "FINAL('see \"nothing like this\" [1]')"), reply("", CITE_AND_ANSWER))
    proc = run_cli(ask_args(fake_llm, str(log), extra=["--cite", "off", "--json"]))
    document = json.loads(proc.stdout)
    assert document["citations"] is None and document["unverified"] is None
    system = fake_llm.root_requests[0]["body"]["messages"][0]["content"]
    assert "cite(" not in system and "locate(" not in system
    proc = run_cli(ask_args(fake_llm, str(log)))  # the default, check: taught
    system = fake_llm.root_requests[1]["body"]["messages"][0]["content"]
    assert "cite(where, start_line=None, end_line=None)" in system and "locate(text)" in system
    assert "Sources:" in proc.stdout.decode()


def test_replay_and_logs_show_print_the_sources(fake_llm, run_cli, log, tmp_path):
    fake_llm.add_root(reply("", CITE_AND_ANSWER))
    trace = tmp_path / "run.jsonl"
    asked = run_cli(ask_args(fake_llm, str(log), extra=["--trace", str(trace)]))
    assert asked.returncode == 0, asked.stderr.decode()
    block = asked.stdout.decode()[asked.stdout.decode().index("Sources:") :]
    assert block.startswith("Sources:\n[1] ") and block.endswith("    beta ERROR disk full on /var\n")
    replayed = run_cli(["replay", str(trace)])
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert replayed.stdout.decode() == asked.stdout.decode()
    assert "unverified quote" in replayed.stderr.decode()  # the live view's warnings, replayed
    shown = run_cli(["logs", "show", "last"])
    assert shown.returncode == 0 and shown.stdout.decode().endswith(block)


# ---------- the REPL side: cite() and locate() over the real protocol ----------


def repl_cells(tmp_path: Path, cells: list[str]) -> tuple[list, list]:
    """Run cells in a local REPL over the two-file context of test_repl_server; (results, spans)."""
    import asyncio

    from test_repl_server import make_context

    from rlmcli.repl.confine import SandboxLimits
    from rlmcli.repl.process import ProcessSandbox
    from rlmcli.repl.protocol import Repl

    ctx, idx = make_context(tmp_path)

    async def main():
        repl = Repl(ProcessSandbox(SandboxLimits(memory=1024**3)), ctx, idx, cell_timeout=10)
        await repl.start()
        try:
            return [await repl.run_cell(code) for code in cells], await repl.citations()
        finally:
            await repl.close()

    return asyncio.run(main())


def test_cite_takes_matches_locations_pairs_and_paths_and_registers_spans(tmp_path):
    # a.log: "alpha line\nbeta ERROR one\ngamma\n"; b.py: "x = 1\n# ERROR two\n"
    (res, located, errors), spans = repl_cells(
        tmp_path,
        [
            "print(cite(grep('ERROR')[0]), cite(grep('ERROR')[1]), cite(grep('ERROR')[0]), "
            "cite(locate('ERROR one\\ngam')), cite('b.py'), cite('a.log', 3), cite('a.log:1-2'), "
            "cite(('b.py', 1)), cite('./b.py', 1))",
            "print(locate('gamma'), locate('beta  ERROR\\n one'), locate('a.log'), locate('nowhere'))",
            'for bad in ("cite(\'a.log\', 9)", "cite(\'c.log\')", "cite(\'-\')", "cite(3)"):\n'
            "    try:\n        eval(bad)\n    except (ValueError, TypeError) as e:\n        print(e)",
        ],
    )
    assert res.output == "[1] [2] [1] [3] [4] [5] [6] [7] [7]\n"  # the same span keeps its marker
    assert located.output == "a.log:3 a.log:2 None None\n"  # a header line is no match
    assert errors.output.splitlines() == [
        "cite: lines 9-9 are not in a.log, which has 3 line(s)",
        "cite: 'c.log' is not a loaded file (files: a.log, b.py)",
        "cite: '-' is not a loaded file (files: a.log, b.py)",
        "cite: give a grep match, a locate() result, a (path, line) pair or a path, not int",
    ]
    got = [(s.marker, s.path, s.start_line, s.end_line, s.byte_start, s.byte_end) for s in spans]
    assert got == [
        (1, "a.log", 2, 2, 11, 25), (2, "b.py", 2, 2, 6, 17), (3, "a.log", 2, 3, 11, 31),
        (4, "b.py", 1, 2, 0, 17), (5, "a.log", 3, 3, 26, 31), (6, "a.log", 1, 2, 0, 25),
        (7, "b.py", 1, 1, 0, 5),
    ]  # fmt: skip


# ---------- the host side: cutting, checking, rendering ----------


def load(tmp_path: Path, paths: list[str], stdin: bytes | None = None):
    import io

    from rlmcli.context import load_context
    from rlmcli.walk import LoadOptions

    stream = io.BytesIO(stdin) if stdin is not None else None
    return load_context(paths, tmp_path / "work", LoadOptions(), stream)


def span(marker, path, start, end, byte_start=0, byte_end=0):
    from rlmcli.repl.protocol import CitedSpan

    return CitedSpan(marker, path, start, end, byte_start, byte_end)


FILES = {
    "u.txt": "héllo wörld\nzweite Zeile ✓\ndritte\n".encode(),
    "crlf.log": b"one\r\ntwo\r\nthree",  # CRLF, no newline at the end
    "sub/deep.py": b"def f():\n    return 1\n",
}


@pytest.mark.parametrize("kind", ["directory", "file", "stdin"])
def test_the_host_cuts_every_line_from_the_input_with_its_bytes(tmp_path, kind):
    from rlmcli.cite.source import InputText

    root = tmp_path / "d"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    if kind == "directory":
        context = load(tmp_path, [str(root)])
    elif kind == "file":
        context = load(tmp_path, [str(root / "crlf.log")])
    else:
        context = load(tmp_path, ["-"], stdin=FILES["u.txt"])
    source = InputText(context)
    checked = 0
    for entry in context.files:
        data = FILES["u.txt"] if kind == "stdin" else (root / Path(entry.path).relative_to(root)).read_bytes()
        lines = data.split(b"\n")
        starts = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
        for first in range(1, entry.lines + 1):
            for last in range(first, entry.lines + 1):
                cut = source.cut(entry, first, last)
                expected = b"\n".join(lines[first - 1 : last]).removesuffix(b"\r")
                assert cut.text.encode() == expected
                assert data[cut.byte_start : cut.byte_end] == expected and cut.byte_start == starts[first - 1]
                checked += 1
    assert checked >= 6


def test_check_resolves_markers_and_flags_what_the_input_does_not_hold(tmp_path):
    from rlmcli.cite import check

    root = tmp_path / "d"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    context = load(tmp_path, [str(root)])
    u, crlf = f"{root}/u.txt", f"{root}/crlf.log"
    spans = [
        span(1, u, 2, 2, 14, 30),  # "zweite Zeile ✓": 16 bytes after "héllo wörld\n" (14)
        span(2, crlf, 2, 3, 5, 15),
        span(3, crlf, 1, 1, 0, 99),  # the REPL's bytes disagree with the input's
        span(4, crlf, 4, 4, 0, 0),  # no such line
    ]
    answer = (
        'Zeile [1], then [2][3][4][5]. It says "zweite   Zeile ✓" and "not in there at all", '
        '`def f():` and sub/deep.py:2, deep.py:3, u.txt:1-2, nope/x.py:1.\n```\n"fenced quote text" [9]\n```'
    )
    evidence = check(answer, spans, context)
    assert [(c.marker, c.text, c.byte_start, c.byte_end) for c in evidence.citations] == [
        (1, "zweite Zeile ✓", 14, 30),
        (2, "two\r\nthree", 5, 15),
    ]
    assert evidence.citations[0].sha256 == hashlib.sha256(FILES["u.txt"]).hexdigest()
    assert [(u.kind, u.text, u.reason) for u in evidence.unverified] == [
        ("span", "[3]", "the REPL put it at bytes 0-99, the input at 0-3"),
        ("span", "[4]", f"lines 4-4 are not in {crlf} (3 lines)"),
        ("marker", "[5]", "names no span registered with cite()"),
        ("quote", "not in there at all", "not found in the input"),
        ("reference", "deep.py:3", f"line 3 is past the end of {root}/sub/deep.py (2 lines)"),
        ("reference", "nope/x.py:1", "nope/x.py is not a loaded file"),
    ]
    assert evidence.notes == ['quote "zweite   Zeile ✓" matches the input only with whitespace normalised']
    assert evidence.failures("check") == []
    assert len(evidence.failures("require")) == 6


def test_require_fails_an_answer_without_a_verified_citation(tmp_path):
    from rlmcli.cite import check

    (tmp_path / "a.txt").write_text("one\n")
    evidence = check("It is one.", [], load(tmp_path, [str(tmp_path / "a.txt")]))
    assert evidence.unverified == [] and evidence.failures("check") == []
    assert evidence.failures("require") == [
        "the answer cites no span: it has no [n] marker that cite() returned"
    ]


def test_the_sources_block_trims_long_lines_and_long_spans():
    from rlmcli.cite import Citation, sources_block
    from rlmcli.cite.render import MAX_LINE_CHARS, MAX_LINES

    long_line = "x" * (MAX_LINE_CHARS + 50)
    many = "\r\n".join(f"line {i}" for i in range(1, 31))
    block = sources_block(
        [
            Citation(1, "a.log", 7, 7, 0, 0, "", long_line),
            Citation(2, "b.log", 1, 30, 0, 0, "", many),
        ]
    )
    assert block.split("\n") == [
        "Sources:",
        "[1] a.log:7",
        "    " + "x" * MAX_LINE_CHARS + " …",
        "[2] b.log:1-30",
        *[f"    line {i}" for i in range(1, MAX_LINES + 1)],
        f"    … {30 - MAX_LINES} more lines",
    ]
    assert sources_block([]) == ""


# ---------- through sub-calls: llm_query(..., quotes=True) ----------


def test_subcall_quotes_come_back_as_handles_and_invented_ones_are_dropped(fake_llm, run_cli, log):
    fake_llm.sub = lambda prompt: (
        "The disk filled up.\nQUOTE: beta ERROR disk full on /var\nQUOTE: the database exploded at noon"
    )
    fake_llm.add_root(
        reply("", "r = llm_query('What failed?\\n\\n' + files[next(iter(files))], quotes=True)\n"
                  "print(repr(str(r)), r.quotes, r.dropped)"),
        reply("", "FINAL(r + ' ' + cite(r.quotes[0]))"),
    )  # fmt: skip
    proc = run_cli(ask_args(fake_llm, str(log)))
    assert proc.returncode == 0, proc.stderr.decode()
    (sub,) = fake_llm.sub_requests
    assert "QUOTE:" in sub["body"]["messages"][-1]["content"]  # the sub-model was asked for quotes
    seen = last_user_message(fake_llm.root_requests[1])
    assert f"'The disk filled up.' [{log}:2] 1" in seen  # one handle back, one dropped and counted
    assert "1 quote(s) the sub-model gave are not in its prompt: dropped" in seen
    assert proc.stdout.decode().startswith("The disk filled up. [1]\n\nSources:\n[1] ")
    assert proc.stdout.decode().endswith("app.log:2\n    beta ERROR disk full on /var\n")
