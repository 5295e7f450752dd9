"""`rlm bench` generators: determinism, length budgets, and gold answers recomputed independently.

Every gold check below re-derives the answer from the row's own context and the raw source data
(TREC files, Loghub CSVs, the JSON haystack, the code in the context) with separate, simple code;
none of it calls the generators' gold helpers.
"""

from __future__ import annotations

import ast
import csv
import datetime
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from rlmcli import bench
from rlmcli.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RLM_DATA_DIR") or REPO.parent / "shared" / "data")
needs_data = pytest.mark.skipif(
    not (DATA / "trec").is_dir() or not (DATA / "loghub").is_dir(),
    reason=f"benchmark source data not found at {DATA} (../shared/data lives outside the repository)",
)
DATA_FAMILIES = {"oolong", "oolong-pairs", "logs"}


def _params(families):
    return [pytest.param(f, marks=needs_data) if f in DATA_FAMILIES else f for f in families]


# --------------------------------------------------------------------------- determinism, budgets


@pytest.mark.parametrize("task", _params(bench.FAMILIES))
def test_same_arguments_same_bytes_across_processes(task, tmp_path):
    here = tmp_path / "here.jsonl"
    bench.write_jsonl(bench.generate(task, 5, 4096, 7), here)
    other = tmp_path / "other.jsonl"
    code = (
        f"from rlmcli import bench; bench.write_jsonl(bench.generate({task!r}, 5, 4096, 7), {str(other)!r})"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a different str hash must not change anything
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert here.read_bytes() == other.read_bytes()
    assert bench.generate(task, 5, 4096, 8) != bench.generate(task, 5, 4096, 7)


@pytest.mark.parametrize("task", _params(bench.FAMILIES))
def test_rows_fit_length_and_carry_metadata(task):
    length = 8192
    rows = bench.generate(task, 6, length, 3)
    assert [r["index"] for r in rows] == list(range(6))
    assert len({r["id"] for r in rows}) == 6
    for row in rows:
        assert row["task"] == task and row["seed"] == 3 and row["length"] == length
        # The program's one token count (tokens.py); `length` sizes contexts in characters / 4.
        assert row["context_tokens"] == bench.estimate_tokens(row["context"]) > 0
        assert len(row["context"]) + len(row["question"]) <= 4 * length
        assert len(row["context"]) > 4 * length * 0.8, "the context should fill most of the length"
        assert isinstance(row["answer"], list) and isinstance(row["meta"], dict)


def test_write_jsonl_is_sorted_utf8_with_newlines(tmp_path):
    path = tmp_path / "rows.jsonl"
    bench.write_jsonl([{"b": "é", "a": [1, 2]}, {"z": 0}], path)
    assert path.read_bytes() == '{"a": [1, 2], "b": "é"}\n{"z": 0}\n'.encode()
    assert bench.read_jsonl(path) == [{"a": [1, 2], "b": "é"}, {"z": 0}]


def test_unknown_task_is_a_usage_error():
    with pytest.raises(InputError, match="unknown"):
        bench.generate("nope", 1, 4096, 0)


def test_families_describe_themselves():
    assert set(bench.FAMILIES) == {"sniah", "oolong", "oolong-pairs", "needle-threading", "logs", "codeqa"}
    for name, fam in bench.FAMILIES.items():
        assert fam.name == name and fam.description and fam.provenance and fam.scorer


# --------------------------------------------------------------------------- sniah

NEEDLE = re.compile(r"One of the special magic (numbers|uuids) for ([a-z]+-[a-z]+) is: ([0-9a-f-]+)\.")


@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_sniah_needle_is_unique_and_answers_the_question(profile):
    rows = bench.generate("sniah", 9, 8192, 1, profile)
    assert {r["meta"]["ruler_task"] for r in rows} == {"niah_single_1", "niah_single_2", "niah_single_3"}
    depths = []
    for row in rows:
        found = NEEDLE.findall(row["context"])
        assert len(found) == 1
        kind, key, value = found[0]
        assert row["answer"] == [value] and key in row["question"]
        assert (kind == "uuids") == (len(value) == 36) and (kind == "numbers") == (len(value) == 7)
        at = row["context"].index("One of the special magic") / len(row["context"]) * 100
        # The depth is a sentence index (RULER); in characters it lands near it, how near depends on
        # the lengths of the sentences around it, which differ with the budget.
        assert abs(at - row["meta"]["depth_percent"]) < (3 if profile == "cli" else 6)
        depths.append(row["meta"]["depth_percent"])
        if row["meta"]["haystack"] == "noise":
            noise = (
                "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
            )
            assert {line for line in row["context"].split("\n") if "special magic" not in line} == {noise}
        assert bench.score(row, f"The special magic number is {value.upper()}.") == 1.0
    assert depths[0] == 0 and depths[-1] == 100 and depths == sorted(depths)


def test_sniah_prompt_template_is_rulers_singular_form():
    row = bench.generate("sniah", 1, 4096, 0)[0]
    key = row["meta"]["key"]
    assert row["meta"]["prompt_template"] == (
        "A special magic number is hidden within the following text. Make sure to memorize it. I will quiz "
        "you about the number afterwards.\n{context}\nWhat is the special magic number for "
        f"{key} mentioned in the provided text? The special magic number for {key} mentioned in the "
        "provided text is"
    )


# --------------------------------------------------------------------------- oolong

LINE = re.compile(r"^Date: ([A-Z][a-z]{2} \d{2}, \d{4}) \|\| User: (\d{5}) \|\| Instance: (.*)$")
WORDS = {
    "ABBR": "abbreviation",
    "DESC": "description and abstract concept",
    "ENTY": "entity",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}


def trec_labels() -> dict[str, str]:
    labels = {}
    for name in ("TREC.train", "TREC.test"):
        for line in (DATA / "trec" / name).read_bytes().decode("latin-1").splitlines():
            coarse, text = line.split(" ", 1)
            labels[text.strip()] = WORDS[coarse.split(":")[0]]
    return labels


def parse_window(context: str) -> list[tuple[datetime.date, int, str]]:
    labels = trec_labels()
    rows = []
    for line in context.splitlines():
        m = LINE.match(line)
        if m:
            day = datetime.datetime.strptime(m.group(1), "%b %d, %Y").date()
            rows.append((day, int(m.group(2)), labels[m.group(3)]))
    return rows


def expected_oolong(question: str, items: list[tuple[datetime.date, int, str]]) -> str:
    if m := re.search(r"associated with user IDs ([\d, ]+)\. Among", question):
        users = {int(u) for u in m.group(1).split(", ")}
        items = [i for i in items if i[1] in users]
    elif m := re.search(r"occur in (\w+) of any year", question):
        month = datetime.datetime.strptime(m.group(1), "%B").month
        items = [i for i in items if i[0].month == month]
    elif m := re.search(r"occur between (\w{3} \d{2}, \d{4}) and (\w{3} \d{2}, \d{4}), inclusive", question):
        lo, hi = (datetime.datetime.strptime(g, "%b %d, %Y").date() for g in m.groups())
        items = [i for i in items if lo <= i[0] <= hi]
    counts = Counter(label for _, _, label in items)
    if m := re.search(r"one of the labels: (.*)\.$", question):
        options = {label: counts[label] for label in m.group(1).split(", ")}
        best = (max if "most common" in question else min)(options.values())
        (winner,) = [label for label, c in options.items() if c == best]
        return winner
    if m := re.search(
        r"is label '(.+?)' more common, less common, or the same frequency as label '(.+?)'", question
    ):
        a, b = counts[m.group(1)], counts[m.group(2)]
        return "more common than" if a > b else "less common than" if a < b else "same frequency as"
    if m := re.search(r"how many data points should be classified as label '(.+?)'", question):
        return str(counts[m.group(1)])
    if m := re.search(r"which user has the most instances with the label (.+?)\?", question):
        return str(Counter(u for _, u, lab in items if lab == m.group(1)).most_common(1)[0][0])
    if "which user is represented most often" in question:
        return str(Counter(u for _, u, _ in items).most_common(1)[0][0])
    if "which date is represented most often" in question:
        return Counter(d for d, _, _ in items).most_common(1)[0][0].isoformat()
    raise AssertionError(f"unrecognised question: {question}")


@needs_data
def test_oolong_gold_recomputed_from_trec_labels():
    rows = bench.generate("oolong", 25, 8192, 2)
    items = parse_window(rows[0]["context"])
    n = len(items)
    assert rows[0]["context"].startswith(
        f"The following lines contain {n} general-knowledge questions, one per"
    )
    assert f"Recall: the preceding lines contain {n} general-knowledge questions" in rows[0]["context"]
    assert "Calculate the exact answer given these datapoints." in rows[0]["context"]
    assert len({r["context"] for r in rows}) == 1, "25 questions share one context window"
    seen = set()
    for row in rows:
        assert row["answer"] == [expected_oolong(row["question"], items)], row["question"]
        assert bench.score(row, f"Answer: {row['answer'][0]}") == 1.0
        seen.add((row["meta"]["task_group"], row["meta"]["answer_type"]))
    types = {t for _, t in seen}
    assert {"ANSWER_TYPE.LABEL", "ANSWER_TYPE.NUMERIC", "ANSWER_TYPE.COMPARISON", "ANSWER_TYPE.USER"} <= types
    assert {g for g, _ in seen} == {"counting", "user", "timeline"}


@needs_data
def test_oolong_user_ids_are_skewed_and_dates_in_range():
    items = parse_window(bench.generate("oolong", 1, 32768, 0)[0]["context"])
    users = Counter(u for _, u, _ in items)
    top = sum(c for _, c in users.most_common(max(1, len(items) // 10)))
    assert top / len(items) > 0.7  # ~80% of lines come from the 10% "common" IDs
    assert all(datetime.date(2022, 2, 16) <= d <= datetime.date(2025, 6, 21) for d, _, _ in items)


# --------------------------------------------------------------------------- oolong-pairs

PAPER_TASK_1 = (
    "In the above data, list all pairs of user IDs (no duplicate pairs, list lower ID first) where "
    "both users have at least one instance with a numeric value or location. Each of the questions "
    "can be labelled as one of the labels (the data does not provide the labels, you need to figure "
    "out the label from the semantics of the question): description and abstract concept, entity, "
    "human being, numeric value, location, abbreviation. In your answer, list all pairs in the format "
    "(user_id_1, user_id_2), separated by newlines."
)
PAPER_TASK_11_HEAD = (
    "In the above data, list all pairs of user IDs (no duplicate pairs, list lower ID first) such "
    "that one user has at least one instance with entity and one with abbreviation, and the other "
    "user has exactly one instance with entity. Each of the questions"
)


def pair_conditions():
    """The 20 Appendix D.1 queries as predicates over one user's [(date, label)] (symmetric or two roles)."""
    num, loc, ent, hum, desc, abbr = (
        "numeric value",
        "location",
        "entity",
        "human being",
        "description and abstract concept",
        "abbreviation",
    )

    def c(u, label):
        return sum(1 for _, lab in u if lab == label)

    def all_dates(u, label, ok):
        return all(ok(d) for d, lab in u if lab == label)

    d = datetime.date
    return {
        1: lambda u: c(u, num) or c(u, loc),
        2: lambda u: c(u, ent) or c(u, hum),
        3: lambda u: c(u, desc) or c(u, abbr),
        4: lambda u: (c(u, hum) or c(u, loc)) and all_dates(u, hum, lambda x: x > d(2023, 1, 6)),
        5: lambda u: (c(u, ent) or c(u, num)) and all_dates(u, ent, lambda x: x < d(2023, 3, 15)),
        6: lambda u: c(u, loc) or c(u, abbr),
        7: lambda u: (c(u, desc) or c(u, num)) and all_dates(u, num, lambda x: x > d(2023, 2, 1)),
        8: lambda u: c(u, hum) or c(u, desc),
        9: lambda u: (c(u, ent) or c(u, loc)) and all_dates(u, loc, lambda x: x > d(2023, 4, 10)),
        10: lambda u: (c(u, num) or c(u, abbr)) and all_dates(u, abbr, lambda x: x < d(2023, 5, 20)),
        11: (lambda u: c(u, ent) >= 1 and c(u, abbr) >= 1, lambda u: c(u, ent) == 1),
        12: (lambda u: c(u, num) >= 2, lambda u: c(u, loc) >= 1 and c(u, hum) >= 1),
        13: (lambda u: c(u, desc) == 1, lambda u: c(u, abbr) >= 1 and c(u, ent) >= 1),
        14: (lambda u: c(u, hum) >= 1 and c(u, num) >= 1, lambda u: c(u, loc) == 2),
        15: (lambda u: c(u, ent) and c(u, loc) and c(u, abbr), lambda u: c(u, num) == 1),
        16: (lambda u: c(u, desc) and c(u, hum), lambda u: c(u, ent) >= 2 and c(u, abbr) == 1),
        17: (lambda u: c(u, num) == 1, lambda u: c(u, loc) and c(u, desc)),
        18: (lambda u: c(u, abbr) and c(u, hum) == 1, lambda u: c(u, ent) and c(u, num)),
        19: (lambda u: c(u, loc) >= 2 and c(u, ent), lambda u: c(u, desc) == 1 and c(u, abbr) == 1),
        20: (lambda u: c(u, num) and c(u, hum), lambda u: c(u, loc) and c(u, ent) and c(u, abbr) == 1),
    }


@needs_data
def test_oolong_pairs_gold_recomputed_from_trec_labels():
    rows = bench.generate("oolong-pairs", 20, 4096, 5)
    assert rows[0]["question"] == PAPER_TASK_1
    assert rows[10]["question"].startswith(PAPER_TASK_11_HEAD)
    assert len({r["context"] for r in rows}) == 1
    assert rows[0]["context"] == bench.generate("oolong", 1, 4096, 5)[0]["context"], "same contexts as oolong"
    per_user = defaultdict(list)
    for day, user, label in parse_window(rows[0]["context"]):
        per_user[user].append((day, label))
    users = sorted(per_user)
    conditions = pair_conditions()
    nonempty = 0
    for row in rows:
        cond = conditions[row["meta"]["query"]]
        expected = []
        for i, a in enumerate(users):
            for b in users[i + 1 :]:
                ua, ub = per_user[a], per_user[b]
                if callable(cond):
                    ok = cond(ua) and cond(ub)
                else:
                    ok = (cond[0](ua) and cond[1](ub)) or (cond[1](ua) and cond[0](ub))
                if ok:
                    expected.append([a, b])
        assert row["answer"] == expected, row["meta"]["query"]
        nonempty += bool(expected)
        listing = "\n".join(f"({b}, {a})" for a, b in expected)  # reversed order must not matter
        assert bench.score(row, listing) == 1.0
    assert nonempty >= 15


# --------------------------------------------------------------------------- needle-threading


@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_needle_threading_gold_follows_the_json(profile):
    rows = bench.generate("needle-threading", 12, 8192, 4, profile)
    assert {r["meta"]["variant"] for r in rows} == {
        "single_needle",
        "multiple_needles",
        "thread_forward",
        "thread_backward",
    }
    for row in rows:
        haystack = json.loads(row["context"])
        order = list(haystack)
        variant = row["meta"]["variant"]
        assert bench.score(row, "\n".join(row["answer"])) == 1.0
        if variant == "multiple_needles":
            keys = json.loads(re.search(r"Keys: (\[.*\])", row["question"]).group(1))
            assert row["answer"] == [haystack[k] for k in keys]
            continue
        key = re.search(r'Key: "([0-9a-f-]{36})"', row["question"]).group(1)
        if variant == "single_needle":
            assert row["answer"] == [haystack[key]]
            continue
        chain = [key]
        while chain[-1] in haystack:
            chain.append(haystack[chain[-1]])
        assert row["answer"] == [chain[-1]] and len(chain) - 1 == row["meta"]["hops"]
        places = [order.index(k) for k in chain[:-1]]
        assert places == sorted(places, reverse=variant == "thread_backward")


# --------------------------------------------------------------------------- logs


def log_sections(context: str) -> dict[str, list[str]]:
    sections = {}
    for block in re.split(r"^### ", context, flags=re.MULTILINE)[1:]:
        head, _, body = block.partition("\n")
        name, count = re.match(r"(\w+) log \((\d+) lines\)", head).groups()
        sections[name] = body.rstrip("\n").split("\n")
        assert len(sections[name]) == int(count)
    return sections


@needs_data
@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_logs_gold_recomputed_from_structured_csv(profile):
    rows = bench.generate("logs", 15, 65536, 6, profile)
    assert {r["meta"]["kind"] for r in rows} == {"count", "first", "last", "component", "level"}
    for row in rows:
        sections = log_sections(row["context"])
        system = row["meta"]["system"]
        raw = (DATA / "loghub" / system / f"{system}_2k.log").read_text(encoding="utf-8").splitlines()
        for name, lines in sections.items():
            assert lines == (DATA / "loghub" / name / f"{name}_2k.log").read_text().splitlines()[: len(lines)]
        with open(DATA / "loghub" / system / f"{system}_2k.log_structured.csv", newline="") as f:
            table = list(csv.DictReader(f))[: len(sections[system])]
        kind, question, gold = row["meta"]["kind"], row["question"], row["answer"][0]
        template = re.search(r"event template `(.*?)` \(`<\*>`", question)
        level = re.search(r"level `(.*?)`", question)
        if kind == "count":
            assert gold == str(sum(r["EventTemplate"] == template.group(1) for r in table))
        elif kind in ("first", "last"):
            hits = [i for i, r in enumerate(table) if r["EventTemplate"] == template.group(1)]
            line = raw[hits[0] if kind == "first" else hits[-1]]
            assert " ".join(gold.split()) in " ".join(line.split())
        elif kind == "level":
            assert gold == str(sum(r["Level"] == level.group(1) for r in table))
        else:
            ranked = Counter(r["Component"] for r in table if r["Level"] == level.group(1)).most_common()
            assert gold == ranked[0][0] and (len(ranked) == 1 or ranked[0][1] > ranked[1][1])
        assert bench.score(row, f"Answer: {gold}") == 1.0


# --------------------------------------------------------------------------- codeqa


def code_sections(row) -> dict[str, ast.Module]:
    files = row["meta"]["files"]
    text = row["context"]
    starts = [text.index(f"### File: {path}\n") for path in files]
    out = {}
    for path, start, end in zip(files, starts, [*starts[1:], len(text)], strict=True):
        out[path] = ast.parse(text[start + len(f"### File: {path}\n") : end])
    return out


def expected_codeqa(row) -> str:
    trees = code_sections(row)
    question = row["question"]
    if m := re.search(r"defines the top-level (class|function) `(\w+)`", question):
        return next(
            p for p, t in trees.items() for node in t.body if getattr(node, "name", None) == m.group(2)
        )
    if m := re.search(r"how many classes name `(\w+)` directly", question):

        def names(b):
            while isinstance(b, ast.Subscript):
                b = b.value
            return b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", None)

        return str(
            sum(
                m.group(1) in {names(b) for b in node.bases}
                for t in trees.values()
                for node in ast.walk(t)
                if isinstance(node, ast.ClassDef)
            )
        )
    if m := re.search(
        r"In `(.+?)`, what is the default value of the parameter `(\w+)` of `([\w.]+)`", question
    ):
        path, param, qualname = m.groups()
        body = trees[path].body
        for part in qualname.split("."):
            node = next(n for n in body if getattr(n, "name", None) == part)
            body = node.body
        a = node.args
        pos = a.posonlyargs + a.args
        pairs = list(zip(pos[::-1], a.defaults[::-1], strict=False)) + list(
            zip(a.kwonlyargs, a.kw_defaults, strict=True)
        )
        return next(ast.unparse(d) for arg, d in pairs if arg.arg == param and d is not None)
    if m := re.search(r"the class `(\w+)` in `(.+?)`", question):
        cls = next(n for n in trees[m.group(2)].body if isinstance(n, ast.ClassDef) and n.name == m.group(1))
        return str(sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in cls.body))
    raise AssertionError(question)


def test_codeqa_gold_recomputed_from_the_code_in_context():
    rows = bench.generate("codeqa", 12, 16384, 9)
    assert {r["meta"]["kind"] for r in rows} == {"defines", "subclasses", "default", "methods"}
    for row in rows:
        expected = expected_codeqa(row)
        choices = row["meta"]["choices"]
        assert list(choices.values()).count(expected) == 1
        assert choices[row["answer"][0]] == expected
        for letter, text in choices.items():
            assert f"({letter}) {text}\n" in row["question"] + "\n"
        assert bench.score(row, f"The correct answer is ({row['answer'][0]})") == 1.0


# --------------------------------------------------------------------------- gold locations (citations)


def cited_lines(row) -> set[int]:
    return {line for start, end in row["meta"]["gold_lines"] for line in range(start, end + 1)}


@needs_data
@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_logs_gold_lines_are_the_lines_the_question_is_about(profile):
    rows = bench.generate("logs", 15, 65536, 6, profile)
    assert {r["meta"]["kind"] for r in rows} == {"count", "first", "last", "component", "level"}
    for row in rows:
        system, kind, question = row["meta"]["system"], row["meta"]["kind"], row["question"]
        context = row["context"].split("\n")
        header = next(i for i, line in enumerate(context) if line.startswith(f"### {system} log ("))
        take = int(re.search(r"\((\d+) lines\)", context[header]).group(1))
        with open(DATA / "loghub" / system / f"{system}_2k.log_structured.csv", newline="") as f:
            table = list(csv.DictReader(f))[:take]
        template = re.search(r"event template `(.*?)` \(`<\*>`", question)
        level = re.search(r"level `(.*?)`", question)
        if kind in ("count", "first", "last"):
            hits = [i for i, r in enumerate(table) if r["EventTemplate"] == template.group(1)]
            hits = hits if kind == "count" else [hits[0] if kind == "first" else hits[-1]]
        elif kind == "level":
            hits = [i for i, r in enumerate(table) if r["Level"] == level.group(1)]
        else:
            hits = [
                i
                for i, r in enumerate(table)
                if r["Level"] == level.group(1) and r["Component"] == row["answer"][0]
            ]
        # Line i of the system (0-based) is context line header + 2 (1-based, after the header line).
        assert cited_lines(row) == {header + 2 + i for i in hits}
        raw = (DATA / "loghub" / system / f"{system}_2k.log").read_text(encoding="utf-8").splitlines()
        assert all(context[line - 1] == raw[line - header - 2] for line in cited_lines(row))


@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_codeqa_gold_lines_are_the_definition_sites(profile):
    rows = bench.generate("codeqa", 8, 16384, 9, profile)
    for row in rows:
        context = row["context"].split("\n")
        sites = [context[start - 1] for start, _ in row["meta"]["gold_lines"]]
        question = row["question"]
        if m := re.search(r"defines the top-level (class|function) `(\w+)`", question):
            keyword = "class" if m.group(1) == "class" else "def"
            assert len(sites) == 1 and re.match(rf"(async )?{keyword} {m.group(2)}\b", sites[0]), sites
        elif m := re.search(r"how many classes name `(\w+)` directly", question):
            assert len(sites) == int(row["meta"]["gold_text"])
            assert all(re.match(r"\s*class \w+\(.*\b" + m.group(1) + r"\b", s) for s in sites), sites
        elif m := re.search(r"the parameter `(\w+)` of `([\w.]+)`", question):
            start, end = row["meta"]["gold_lines"][0]
            header = "\n".join(context[start - 1 : end])
            assert (
                re.match(rf"\s*(async )?def {m.group(2).split('.')[-1]}\(", header) and m.group(1) in header
            )
        else:
            assert len(sites) == max(1, int(row["meta"]["gold_text"]))
            assert all(re.match(r"\s+(async )?def \w+", s) for s in sites) or row["meta"]["gold_text"] == "0"


@pytest.mark.parametrize("profile", ["cli", "paper"])
def test_sniah_gold_line_holds_the_needle(profile):
    for row in bench.generate("sniah", 6, 4096, 2, profile):
        ((start, end),) = row["meta"]["gold_lines"]
        assert start == end and row["answer"][0] in row["context"].split("\n")[start - 1]
        if row["meta"]["haystack"] == "noise":
            assert row["context"].split("\n")[start - 1].startswith("One of the special magic")
