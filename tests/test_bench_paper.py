"""`--profile paper`: task sets that can stand beside the RLM paper's Table 1, and citation measures.

Gold answers, line counts and label counts are recomputed here from the row's own context and the
raw source files (OOLONG's validated TREC pool, Loghub, the JSON haystack) with separate code; none
of it calls the generators' helpers. Runs go through `rlm bench` (Typer's CliRunner, in process)
against the fake model server.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import typer
from conftest import SENTINEL_KEY
from fake_llm import FakeLLM, reply
from test_bench_generate import expected_codeqa, expected_oolong, pair_conditions
from typer.testing import CliRunner

from rlmcli import bench
from rlmcli.cli.bench import bench_app
from rlmcli.tokens import count_text

MODEL = "openai/gpt-4o-mini"
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RLM_DATA_DIR") or REPO.parent / "shared" / "data")
VALIDATED = DATA / "oolong" / "trec_coarse_validated.jsonl"
needs_oolong = pytest.mark.skipif(
    not VALIDATED.is_file(), reason=f"OOLONG's validated subset not found at {VALIDATED} (../shared/data)"
)
LINE = re.compile(r"^Date: ([A-Z][a-z]{2} \d{2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: (.*)$")
E3 = (  # arXiv 2512.24601, Appendix E.3, with the window's label order
    "The following lines contain thousands of general-knowledge questions, one per line. Each line has a "
    "User ID, which is not necessarily unique, i.e. each User ID can be associated with multiple questions. "
    "Each question has an answer that can be described as one of 6 categories: {labels} -- remember that "
    "they are not explicitly labeled, so you need to figure out the label from the semantics of the "
    "question. You will be asked to answer questions about the aggregate label statistics across all "
    "examples in this dataset. Do not try to guess, estimate, or approximate the result. Answer the "
    "following: "
)
E2_SUFFIX = (  # Appendix E.2
    "separated by newlines. Your answer must be sorted by first user ID. For example, if the answer is the "
    "Instance ID pairs (22740, 35839) and (35839, 52032), you should return '(22740, 35839), (35839, "
    "52032)'. If there is no answer, return an empty list []."
)

app = typer.Typer()
app.add_typer(bench_app, name="bench")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """invoke(args) -> click Result, with a clean environment (no user config or RLM_*)."""
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    base = {"OPENAI_API_KEY": SENTINEL_KEY, "RLM_CONFIG": str(tmp_path / "no-config.toml"),
            "RLM_DATA_DIR": str(DATA)}  # fmt: skip

    def invoke(args: list[str]):
        return CliRunner().invoke(app, ["bench", *args], env=base)

    return invoke


@functools.cache
def validated_labels() -> dict[str, str]:
    with open(VALIDATED, encoding="utf-8") as f:
        return {item["input"]: item["label"] for item in map(json.loads, filter(str.strip, f))}


def window_items(context: str) -> list[tuple[datetime.date, int, str]]:
    """(date, user, label) of every line, the label looked up in OOLONG's validated file."""
    labels = validated_labels()
    items = []
    for line in context.splitlines():
        if m := LINE.match(line):
            day = datetime.datetime.strptime(m.group(1), "%b %d, %Y").date()
            items.append((day, int(m.group(2)), labels[m.group(3)]))
    return items


def header_labels(context: str) -> list[str]:
    listed = re.search(r"one of 6 categories: (.*?)\.\n", context).group(1)
    return re.findall(r"'([^']+)'", listed)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- oolong


@needs_oolong
@pytest.mark.parametrize(("length", "expected"), [(131072, 3182), (32768, 787)])
def test_oolong_paper_lines_per_context_follow_oolongs_rule(cli, tmp_path, length, expected):
    out = tmp_path / "oolong.jsonl"
    args = [
        "generate",
        "oolong",
        "--profile",
        "paper",
        "--length",
        str(length),
        "--n",
        "2",
        "--out",
        str(out),
    ]
    result = cli(args)
    assert result.exit_code == 0, result.output
    rows = lines(out)
    # N = floor((0.95 L - 168 - 250) / 39), OOLONG's datasets_loader with TREC_Coarse's constants.
    assert int((0.95 * length - 418) // 39) == expected
    for row in rows:
        assert len(window_items(row["context"])) == expected
        assert row["context"].startswith(
            f"The following lines contain {expected} general-knowledge questions"
        )
        assert row["profile"] == "paper" and row["id"] == f"oolong-paper-L{length}-s0-{row['index']:04d}"
        assert row["context_tokens"] == count_text(row["context"]).tokens  # real tokens, o200k_base
    assert f"1 window(s) of {expected:,} lines" in result.stderr  # the report line after writing


@needs_oolong
@pytest.mark.parametrize("length", [16384, 131072])
def test_oolong_paper_draws_the_validated_subset_with_oolongs_label_counts(length):
    rows = bench.generate("oolong", 26, length, 3, "paper")
    windows = {r["meta"]["context_window_id"]: r for r in rows}
    assert len(windows) == 2
    repeats = []
    for row in windows.values():
        items = window_items(row["context"])  # KeyError if a line is not from the validated file
        n = len(items)
        labels = header_labels(row["context"])
        assert sorted(labels) == sorted(set(validated_labels().values()))
        counts = Counter(label for _, _, label in items)
        # OOLONG's construct_context: counts = round(softmax * n), first label corrected to sum to n.
        dist = row["meta"]["label_distribution"]
        assert len(dist) == 6 and abs(sum(dist) - 1) < 1e-9
        expected = [round(p * n) for p in dist]
        expected[0] -= sum(expected) - n
        assert [counts[label] for label in labels] == expected
        assert row["meta"]["label_counts"] == dict(zip(labels, expected, strict=True))
        # A label asked for more lines than the pool has repeats questions; otherwise none repeats.
        pool = Counter(validated_labels().values())
        repeats.append(any(counts[label] > pool[label] for label in labels))
        texts = Counter(m.group(3) for line in row["context"].splitlines() if (m := LINE.match(line)))
        for label in labels:
            repeated = any(c > 1 for t, c in texts.items() if validated_labels()[t] == label)
            assert repeated == (counts[label] > pool[label])
    assert any(repeats)  # with these seeds some label outruns its pool: the duplicate path is taken too


@needs_oolong
def test_oolong_paper_questions_first_25_per_window_in_order_with_the_task_description():
    rows = bench.generate("oolong", 30, 16384, 1, "paper")
    assert [r["meta"]["context_window_id"] for r in rows] == [0] * 25 + [1] * 5
    assert [r["meta"]["question_index"] for r in rows] == list(range(25)) + list(range(5))
    order = {"counting": 0, "user": 1, "timeline": 2}  # CountingTasks, UserTasks, TemporalTasks
    groups = [order[r["meta"]["task_group"]] for r in rows[:25]]
    assert groups == sorted(groups) and groups[0] == 0
    for row in rows:
        labels = ", ".join(f"'{label}'" for label in header_labels(row["context"]))
        question = row["meta"]["oolong_question"]
        assert row["question"] == E3.format(labels=labels) + question
        assert row["answer"] == [expected_oolong(question, window_items(row["context"]))], question
        assert bench.score(row, f"Answer: {row['answer'][0]}") == 1.0


# --------------------------------------------------------------------------- oolong-pairs


@needs_oolong
def test_pairs_paper_at_32k_users_gold_pairs_and_suffix(cli, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = cli(["generate", "oolong-pairs", "--profile", "paper", "--length", "32768", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = lines(out)
    assert len(rows) == 20 and len({r["context"] for r in rows}) == 1  # the paper's 20 tasks, one window
    assert rows[0]["context"] == bench.generate("oolong", 1, 32768, 0, "paper")[0]["context"]
    items = window_items(rows[0]["context"])
    assert len(items) == 787
    per_user = defaultdict(list)
    for day, user, label in items:
        per_user[user].append((day, label))
    users = sorted(per_user)
    conditions = pair_conditions()
    sizes = []
    for row in rows:
        assert row["question"].startswith("Answer the following: In the above data, list all pairs")
        assert row["question"].endswith(E2_SUFFIX)
        cond = conditions[row["meta"]["query"]]
        ua = {u: per_user[u] for u in users}
        if callable(cond):
            expected = [
                [a, b] for i, a in enumerate(users) for b in users[i + 1 :] if cond(ua[a]) and cond(ua[b])
            ]
        else:
            first, second = cond
            expected = [
                [a, b]
                for i, a in enumerate(users)
                for b in users[i + 1 :]
                if (first(ua[a]) and second(ua[b])) or (second(ua[a]) and first(ua[b]))
            ]
        assert row["answer"] == expected
        sizes.append(len(expected))
        # Both answer forms the paper's prompt allows: comma-separated on one line, and [] for none.
        assert bench.score(row, ", ".join(f"({a}, {b})" for a, b in expected) or "[]") == 1.0
    # The numbers `bench list --stats` prints are the ones recomputed here (and in docs/BENCHMARKS.md).
    stats = cli(["list", "--stats", str(out)])
    assert stats.exit_code == 0, stats.output
    median = sorted(sizes)[9:11]
    assert f"users per window {len(users):,}" in stats.stdout
    assert f"gold pairs per query median {sum(median) / 2:,.0f} (min {min(sizes):,}, max {max(sizes):,})" in (
        stats.stdout
    )
    assert (len(users), sum(median) / 2) == (220, 1921.5), "update docs/BENCHMARKS.md with the new numbers"


# --------------------------------------------------------------------------- real token sizing


@pytest.mark.parametrize("task", ["sniah", "needle-threading", "codeqa"])
def test_paper_profile_sizes_other_families_in_real_tokens(task):
    length = 8192
    rows = bench.generate(task, 4, length, 0, "paper")
    for row in rows:
        tokens = count_text(row["context"] + "\n" + row["question"]).tokens
        assert tokens <= length
        # Whole files make codeqa contexts grow in steps; the others fill to within a few percent.
        assert tokens >= length * (0.6 if task == "codeqa" else 0.95), tokens
        assert row["context_tokens"] == count_text(row["context"]).tokens
    cli_rows = bench.generate(task, 4, length, 0)
    assert all("profile" not in r and not r["id"].startswith(f"{task}-paper") for r in cli_rows)


def test_paper_codeqa_asks_for_an_index_and_scores_both_forms():
    for row in bench.generate("codeqa", 4, 8192, 2, "paper"):
        choices = list(row["meta"]["choices"].values())
        index = int(row["answer"][0])
        assert choices[index] == row["meta"]["gold_text"] == expected_codeqa(row)  # recomputed from the code
        assert choices.count(row["meta"]["gold_text"]) == 1
        for i, text in enumerate(choices):
            assert f"\n{i}: {text}\n" in row["question"]
        assert row["question"].endswith("(indexed from 0 to 3).")
        assert "answer with exactly one number choice" in row["question"]
        assert bench.score(row, str(index)) == 1.0 and bench.score(row, f"Answer: {index}") == 1.0
        assert bench.score(row, str((index + 1) % 4)) == 0.0


# --------------------------------------------------------------------------- lengths and methods


def test_sweep_generates_the_papers_lengths(cli, tmp_path):
    out = tmp_path / "sweep.jsonl"
    result = cli(["generate", "sniah", "--profile", "paper", "--sweep", "--n", "1", "--out", "-"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["length"] for r in rows] == [2**k for k in range(13, 21)]  # Figure 1 (v3): 2^13..2^20
    for row in rows:
        assert count_text(row["context"] + "\n" + row["question"]).tokens <= row["length"]
    bad = cli(["generate", "sniah", "--sweep", "--length", "8192", "--out", str(out)])
    assert bad.exit_code == 2 and "--sweep" in bad.stderr
    unknown = cli(["generate", "sniah", "--profile", "nope", "--out", str(out)])
    assert unknown.exit_code == 2 and "unknown --profile" in unknown.stderr


def _answer_for(tasks: list[dict], body: dict) -> dict:
    text = "\n".join(str(m.get("content")) for m in body["messages"])
    (row,) = [r for r in tasks if r["question"] in text]
    return row


@needs_oolong
def test_run_paper_profile_all_four_methods_and_report_side_by_side(cli, tmp_path):
    tasks_path = tmp_path / "paper.jsonl"
    made = cli(["generate", "oolong", "--profile", "paper", "--length", "8192", "--n", "3", "--out",
                str(tasks_path)])  # fmt: skip
    assert made.exit_code == 0, made.output
    tasks = lines(tasks_path)

    def solve(body: dict) -> str:  # the gold, as each method's prompt asks for it
        row = _answer_for(tasks, body)
        if "REPL" not in body["messages"][0]["content"]:
            return f"Answer: {row['answer'][0]}"
        return f"FINAL(Answer: {row['answer'][0]})"

    out = tmp_path / "results.jsonl"
    with FakeLLM(root=[solve] * 40) as fake:
        args = ["run", str(tasks_path), "--profile", "paper", "--model", MODEL, "--api-base", fake.url,
                "--sandbox", "local", "--max-retries", "0", "--out", str(out)]  # fmt: skip
        result = cli(args)  # no --method: the paper profile's list
        assert result.exit_code == 0, result.output
        systems = [r["body"]["messages"][0]["content"] for r in fake.root_requests]
        # The paper's prompt: no cite() section unless --cite is given.
        assert all("cite(" not in system for system in systems)
        # Each method ran as itself: 3 direct prompts, and as many REPL turns without llm_query (d0)
        # as with it (d1) and as with rlm_query taught too (d2).
        repl = [system for system in systems if "REPL" in system]
        assert len(systems) - len(repl) == 3
        d0 = sum("llm_query" not in system for system in repl)
        d2 = sum("rlm_query(" in system for system in repl)
        assert d0 >= 3 and d0 == d2 == len(repl) - d0 - d2
    results = lines(out)
    methods = ["direct", "rlm-d0", "rlm-d1", "rlm-d2"]
    assert sorted((r["id"], r["method"]) for r in results) == sorted(
        (t["id"], m) for t in tasks for m in methods
    )
    assert all(r["score"] == 1.0 and r["error"] is None for r in results), results
    report = cli(["report", str(out), "--no-plot"])
    assert report.exit_code == 0, report.output
    table = [
        line.split()[0]
        for line in report.stdout.splitlines()
        if line.split()[:1] and line.split()[0] in methods
    ]
    assert table == methods  # side by side, in the paper's column order
    for method in methods:
        assert re.search(rf"^{method}\s+3\s+1\.000\s", report.stdout, re.MULTILINE), report.stdout


# --------------------------------------------------------------------------- citation measures

NEEDLE = r"magic \w+ for \S+ is: (\S+)\."


def test_report_shows_citation_precision_and_recall(cli, tmp_path):
    rows = bench.generate("sniah", 4, 2048, 0)
    tasks = [rows[0], rows[3]]  # both noise haystacks: one line per sentence, the needle on its own line
    assert all(r["meta"]["haystack"] == "noise" for r in tasks)
    assert tasks[1]["meta"]["gold_lines"] != [[1, 1]]
    tasks_path = tmp_path / "sniah.jsonl"
    bench.write_jsonl(tasks, tasks_path)

    def policy(body: dict) -> str:
        row = _answer_for(tasks, body)
        if "REPL" not in body["messages"][0]["content"]:
            return re.search(NEEDLE, body["messages"][-1]["content"]).group(1)
        code = f"import re\nvalue = re.search(r'{NEEDLE}', context).group(1)\n"
        if row is tasks[0]:  # cites the needle's line: verified, and at the gold location
            code += "answer = value + ' ' + cite(locate(value))\n"
        else:  # cites line 1 (verified, but not the needle) and a marker cite() never returned
            code += "answer = value + ' ' + cite(locate('The grass is green')) + ' [7]'\n"
        return reply("", code + "FINAL(answer)")

    out = tmp_path / "results.jsonl"
    with FakeLLM(root=[policy] * 10) as fake:
        args = ["run", str(tasks_path), "--method", "rlm,direct", "--model", MODEL, "--api-base", fake.url,
                "--sandbox", "local", "--max-retries", "0", "--out", str(out)]  # fmt: skip
        result = cli(args)
    assert result.exit_code == 0, result.output
    by = {(r["id"], r["method"]): r for r in lines(out)}
    good, mixed = by[(tasks[0]["id"], "rlm")], by[(tasks[1]["id"], "rlm")]
    assert (good["cited"], good["verified"], good["citation_precision"], good["citation_recall"]) == (
        1,
        1,
        1.0,
        1.0,
    )
    assert good["citations"] == tasks[0]["meta"]["gold_lines"]
    assert (mixed["cited"], mixed["verified"], mixed["citation_precision"], mixed["citation_recall"]) == (
        2, 1, 0.5, 0.0,
    )  # fmt: skip
    assert all("cited" not in by[(t["id"], "direct")] for t in tasks)  # direct cannot cite
    report = cli(["report", str(out), "--no-plot", "--json"])
    overall = {g["method"]: g for g in json.loads(report.stdout)["overall"]}
    assert overall["rlm"]["citation_precision"] == pytest.approx(2 / 3)  # 2 verified of 3 markers
    assert overall["rlm"]["citation_recall"] == 0.5  # mean over rows with gold locations
    assert overall["direct"]["citation_precision"] is None and overall["direct"]["citation_recall"] is None
    table = cli(["report", str(out), "--no-plot"]).stdout
    assert "cite prec" in table and "cite rec" in table
    assert re.search(r"^rlm\s+2\s+1\.000\s+\[1\.000, 1\.000\]\s+0\.67\s+0\.50\s", table, re.MULTILINE), table
    assert re.search(r"^direct\s+2\s+1\.000\s+\[1\.000, 1\.000\]\s+-\s+-\s", table, re.MULTILINE), table
