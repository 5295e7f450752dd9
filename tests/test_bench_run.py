"""`rlm bench list|generate|run|report` end to end against the fake model server.

The commands run through Typer's CliRunner on an app that mounts `bench_app` (as cli/app.py does), in
this process: `bench run` drives the real `rlmcli.run.ask` (local sandbox, real HTTP to the fake).
Root policies are reply callables: in rlm mode the root model never sees the context, so a solving
policy writes code that finds the answer; for `direct` it reads the prompt it is sent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import MODEL, SENTINEL_KEY
from fake_llm import FakeLLM, Fault, reply
from typer.testing import CliRunner

from rlmcli import bench
from rlmcli.bench import report, runner
from rlmcli.cli.bench import bench_app
from rlmcli.record.trace import read_trace

ALL_METHODS = "rlm,rlm-no-subcalls,direct"
NEEDLE = r"magic \w+ for \S+ is: (\S+)\."

app = typer.Typer()
app.add_typer(bench_app, name="bench")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """invoke(args, env=None) -> click Result, with a clean environment (no user config or RLM_*)."""
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    base = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "no-config.toml")}

    def invoke(args: list[str], env: dict | None = None):
        return CliRunner().invoke(app, ["bench", *args], env={**base, **(env or {})})

    return invoke


@pytest.fixture
def tasks(tmp_path) -> Path:
    """Three S-NIAH rows: RULER's noise/number, prose/number and prose/UUID configurations."""
    path = tmp_path / "sniah.jsonl"
    bench.write_jsonl(bench.generate("sniah", 3, 2048, 0), path)
    return path


def run_args(fake: FakeLLM, tasks: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(tasks), "--model", MODEL, "--api-base", fake.url, "--sandbox", "local",
            "--max-retries", "0", "--price", "0.15,0.60", "--out", str(out), *extra]  # fmt: skip


def solving(body: dict) -> str:
    system, last = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "REPL" not in system:  # direct: the context is in the prompt
        found = re.search(NEEDLE, last)
        return found.group(1) if found else "not found"
    code = f"import re\nvalue = re.search(r'{NEEDLE}', context).group(1)\n"
    if "llm_query" in system:  # rlm: one sub-call, so the row's sub-call count is non-zero
        code += "check = llm_query('Is this a magic number? ' + value)\n"
    return reply("Found it.", code + "FINAL(value)")


def wrong(body: dict) -> str:
    if "REPL" not in body["messages"][0]["content"]:
        return "I could not find it."
    return reply("", "FINAL('0000000')")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_list_and_generate(cli, tmp_path):
    result = cli(["list"])
    assert result.exit_code == 0, result.output
    for name in bench.FAMILIES:
        assert re.search(rf"^{re.escape(name)}$", result.stdout, re.MULTILINE)
    assert "source: RULER" in result.stdout and "scorer:" in result.stdout
    listed = json.loads(cli(["list", "--json"]).stdout)
    assert [f["name"] for f in listed] == list(bench.FAMILIES) and all(f["provenance"] for f in listed)

    out = tmp_path / "nt.jsonl"
    result = cli(
        ["generate", "needle-threading", "--n", "4", "--length", "1024", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (
        out.read_bytes().decode()
        == cli(
            ["generate", "needle-threading", "--n", "4", "--length", "1024", "--seed", "3", "--out", "-"]
        ).stdout
    )  # the same bytes to a file or stdout
    assert [r["id"] for r in lines(out)] == [f"needle-threading-L1024-s3-{i:04d}" for i in range(4)]
    bad = cli(["generate", "no-such-task", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "unknown benchmark task" in bad.stderr


def test_run_all_three_methods_solves_resumes_and_reports(cli, tasks, tmp_path):
    out = tmp_path / "results.jsonl"
    with FakeLLM(root=[solving] * 50) as fake:
        args = run_args(fake, tasks, out, "--method", ALL_METHODS, "--concurrency", "2")
        result = cli(args)
        assert result.exit_code == 0, result.output
        rows = lines(out)
        keys = sorted((r["id"], r["method"]) for r in rows)
        ids = [r["id"] for r in lines(tasks)]
        assert keys == sorted((i, m) for i in ids for m in ("rlm", "rlm-no-subcalls", "direct"))
        for row in rows:
            assert row["score"] == 1.0 and row["exit_reason"] == "final" and row["error"] is None, row
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
            assert row["cost_usd"] > 0 and row["cost_known"] and row["latency_s"] >= 0
            assert row["model"] == MODEL and row["task"] == "sniah" and row["length"] == 2048
            assert row["truncated"] is False and row["truncated_chars"] == 0
            events = read_trace(out.parent / row["trace"])  # stored relative to RESULTS
            assert events[0].name == "RunStarted" and events[-1].name == "RunFinished"
            assert events[-1].answer == row["answer"]
        by_method = {m: [r for r in rows if r["method"] == m] for m in ("rlm", "rlm-no-subcalls", "direct")}
        assert all(r["subcalls"] == 1 and r["iterations"] == 1 for r in by_method["rlm"])
        assert all(r["subcalls"] == 0 for r in by_method["rlm-no-subcalls"] + by_method["direct"])
        assert all(r["sub_model"] is None for r in by_method["direct"])
        assert all(r["window_tokens"] == 128_000 for r in by_method["direct"])  # litellm's gpt-4o-mini
        # The fake saw each method's own prompt: the whole context for direct, none for the REPL.
        contexts = {r["context"] for r in lines(tasks)}
        root = [r["body"]["messages"] for r in fake.root_requests]
        direct = [m for m in root if "REPL" not in m[0]["content"]]
        assert len(direct) == 3 and all(any(c in m[1]["content"] for c in contexts) for m in direct)
        assert all(not any(c in m[1]["content"] for c in contexts) for m in root if m not in direct)
        assert sum("llm_query" not in m[0]["content"] for m in root if m not in direct) == 3
        # The summary table: one line per method.
        for method in ("rlm", "rlm-no-subcalls", "direct"):
            assert re.search(rf"^{method}\s+3\s+1\.000", result.stdout, re.MULTILINE), result.stdout

        # Resume: nothing redone, no request made.
        seen = len(fake.requests)
        again = cli(args)
        assert again.exit_code == 0, again.output
        assert len(fake.requests) == seen and len(lines(out)) == 9
        assert "skipped 9" in again.stderr

    plot = tmp_path / "plot.svg"
    result = cli(["report", str(out), "--out", str(plot)])
    assert result.exit_code == 0, result.output
    assert "By task family" not in result.stdout  # one family: the overall table says it all
    for method in ("rlm", "rlm-no-subcalls", "direct"):
        assert re.search(rf"^{method}\s+3\s+1\.000\s+\[1\.000, 1\.000\]", result.stdout, re.MULTILINE)
    svg = plot.read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert all(f">{m}</text>" in svg for m in ("rlm", "rlm-no-subcalls", "direct")) and ">2K</text>" in svg
    default = cli(["report", str(out)])  # default plot: RESULTS with .svg
    assert default.exit_code == 0 and (tmp_path / "results.svg").is_file()


def test_a_wrong_policy_scores_below_one(cli, tasks, tmp_path):
    out = tmp_path / "wrong.jsonl"
    with FakeLLM(root=[wrong] * 20) as fake:
        result = cli(run_args(fake, tasks, out, "--method", ALL_METHODS, "--json"))
    assert result.exit_code == 0, result.output
    rows = lines(out)
    assert len(rows) == 9 and all(r["score"] < 1.0 and r["exit_reason"] == "final" for r in rows)
    summary = json.loads(result.stdout)
    assert summary["ran"] == 9 and summary["skipped"] == 0 and summary["errors"] == 0
    assert {g["method"]: g["score"] for g in summary["report"]["overall"]} == {
        "rlm": 0.0, "rlm-no-subcalls": 0.0, "direct": 0.0,
    }  # fmt: skip


def test_direct_cuts_the_context_to_the_window_and_says_so(cli, tasks, tmp_path):
    out = tmp_path / "cut.jsonl"
    with FakeLLM(root=[solving] * 5) as fake:
        result = cli(run_args(fake, tasks, out, "--method", "direct", "--context-window", "1000"))
        prompts = [r["body"]["messages"][1]["content"] for r in fake.root_requests]
    assert result.exit_code == 0, result.output
    assert "context cut" in result.stderr
    task_rows = {r["id"]: r for r in lines(tasks)}
    for row, prompt in zip(lines(out), prompts, strict=True):
        context = task_rows[row["id"]]["context"]
        assert row["truncated"] is True and row["window_tokens"] == 1000
        assert 0 < row["truncated_chars"] < len(context)
        assert f"({row['truncated_chars']:,} characters) was cut" in prompt
        assert len(prompt) < len(context) and prompt.endswith(task_rows[row["id"]]["question"])
    assert "3 direct row(s) had their context cut" in cli(["report", str(out), "--no-plot"]).stdout


def test_missing_api_key_stops_the_bench_before_anything(cli, tasks, tmp_path):
    out = tmp_path / "nokey.jsonl"
    result = cli(["run", str(tasks), "--model", MODEL, "--method", ALL_METHODS, "--out", str(out)],
                 env={"OPENAI_API_KEY": None})  # fmt: skip
    assert result.exit_code == 4, result.output
    assert "OPENAI_API_KEY is not set" in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_sandbox_docker_without_a_daemon_stops_the_bench_before_anything(cli, tasks, tmp_path):
    out = tmp_path / "nodocker.jsonl"
    with FakeLLM() as fake:
        args = ["run", str(tasks), "--model", MODEL, "--api-base", fake.url, "--sandbox", "docker",
                "--out", str(out)]  # fmt: skip
        result = cli(args, env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
        assert result.exit_code == 5 and "no Docker daemon" in result.stderr, result.output
        assert not out.exists() and fake.requests == []


def test_a_failing_row_is_an_error_row_and_retry_errors_redoes_it(cli, tasks, tmp_path):
    out = tmp_path / "errors.jsonl"
    with FakeLLM(root=[Fault(status=400), solving, Fault(status=400)]) as fake:
        result = cli(run_args(fake, tasks, out, "--method", "direct", "--limit", "2"))
        assert result.exit_code == 0, result.output
        first, second = lines(out)
        assert first["exit_reason"] == "provider_error" and first["score"] == 0.0
        assert "400" in first["error"] and second["score"] == 1.0 and second["error"] is None
        # rlm: a provider failure inside the loop comes back as a result, and is an error row too.
        result = cli(run_args(fake, tasks, out, "--method", "rlm", "--limit", "1"))
        rlm_row = lines(out)[-1]
        assert result.exit_code == 0 and rlm_row["method"] == "rlm"
        assert rlm_row["exit_reason"] == "provider_error" and rlm_row["error"] and rlm_row["score"] == 0.0

        seen = len(fake.requests)
        assert cli(run_args(fake, tasks, out, "--method", "direct", "--limit", "2")).exit_code == 0
        assert len(fake.requests) == seen  # a plain resume keeps error rows
        fake.add_root(solving)
        result = cli(run_args(fake, tasks, out, "--method", "direct", "--limit", "2", "--retry-errors"))
        assert result.exit_code == 0 and len(fake.requests) == seen + 1
    merged = report.load_results([out])  # the retried row replaces the error row
    direct = [r for r in merged if r["method"] == "direct"]
    assert len(direct) == 2 and all(r["score"] == 1.0 for r in direct)


def test_ctrl_c_keeps_finished_rows_and_a_rerun_resumes(cli, tasks, tmp_path, monkeypatch):
    out = tmp_path / "stopped.jsonl"
    real = runner.run_one
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(args[0]["id"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with FakeLLM(root=[solving] * 10) as fake:
        monkeypatch.setattr(runner, "run_one", interrupted_second)
        result = cli(run_args(fake, tasks, out, "--method", "direct"))
        assert result.exit_code == 130 and "run the same command again to resume" in result.stderr
        assert [r["id"] for r in lines(out)] == calls[:1]
        monkeypatch.setattr(runner, "run_one", real)
        assert cli(run_args(fake, tasks, out, "--method", "direct")).exit_code == 0
    assert sorted(r["id"] for r in lines(out)) == sorted(r["id"] for r in lines(tasks))


def test_run_a_task_name_generates_a_set_and_two_files_report_together(cli, tmp_path):
    def threads(body: dict) -> str:  # direct on needle-threading: look the keys up in the JSON
        prompt = body["messages"][1]["content"]
        pairs = json.loads(prompt[: prompt.index("}") + 1])
        keys = re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", prompt[prompt.index("}") + 1 :])
        return "\n".join(pairs[k] for k in keys)

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with FakeLLM(root=[threads] * 4) as fake:
        for length, out in ((1024, first), (2048, second)):
            args = ["run", "needle-threading", "--n", "2", "--length", str(length), "--method", "direct",
                    "--model", MODEL, "--api-base", fake.url, "--out", str(out), "--quiet"]  # fmt: skip
            result = cli(args)
            assert result.exit_code == 0, result.output
            assert result.stderr == ""  # --quiet
    ids = [r["id"] for r in lines(first) + lines(second)]
    assert ids == [f"needle-threading-L{n}-s0-{i:04d}" for n in (1024, 2048) for i in range(2)]
    assert all(r["score"] == 1.0 for r in lines(first) + lines(second))

    result = cli(["report", str(first), str(second), "--json", "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(g["length"], g["n"]) for g in data["by_length"]] == [(1024, 2), (2048, 2)]
    assert (
        data["overall"][0]["n"] == 4 and data["overall"][0]["ci_low"] == data["overall"][0]["ci_high"] == 1.0
    )
    try:
        import matplotlib  # noqa: F401

        assert data["plot"].endswith("p.png") and (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    except ImportError:  # no `plot` extra: an SVG beside it, and a word about it
        assert data["plot"].endswith("p.svg") and (tmp_path / "p.svg").is_file()
        assert "matplotlib is not installed" in result.stderr


def test_bad_arguments_are_usage_errors(cli, tasks, tmp_path):
    out = str(tmp_path / "r.jsonl")
    for args, message in (
        (["run", str(tasks), "--method", "vanilla", "--out", out], "unknown method 'vanilla'"),
        (["run", "nothing-here", "--out", out], "neither a tasks file nor a task family"),
        (["run", str(tasks), "--n", "3", "--out", out], "apply to a TASK name"),
        (["run", str(tasks), "--concurrency", "0", "--out", out], "--concurrency must be at least 1"),
        (["report", str(tmp_path / "missing.jsonl")], "no results file"),
    ):
        result = cli(args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    import random

    values = [1.0] * 6 + [0.0] * 4
    one = report.bootstrap_ci(values, random.Random("x"))
    assert one == report.bootstrap_ci(values, random.Random("x"))
    assert 0.2 < one[0] < 0.6 < one[1] < 1.0
    assert report.bootstrap_ci([0.5, 0.5], random.Random(0)) == (0.5, 0.5)
    rows = [
        {"id": str(i), "method": "rlm", "task": "sniah", "length": 1024, "score": v}
        for i, v in enumerate(values)
    ]
    assert report.aggregate(rows, ("task",)) == report.aggregate(list(reversed(rows)), ("task",))


def test_a_results_line_cut_by_a_kill_is_ignored_and_redone(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "a", "method": "direct", "model": "m", "score": 1.0}\n{"id": "b", "meth')
    assert [r["id"] for r in runner.read_results(path)] == ["a"]
    path.write_text('{"id": "a"}\nnot json\n{"id": "b", "method": "direct"}\n')
    with pytest.raises(Exception, match="not a bench results file"):
        runner.read_results(path)


def test_importing_the_bench_cli_stays_light():
    heavy = "('litellm', 'rlmcli.bench', 'rlmcli.run')"
    code = f"import sys, rlmcli.cli.bench; print([m for m in sys.modules if m.startswith({heavy})])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
