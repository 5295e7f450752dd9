"""`rlm bench` scorers against the official rules' edge cases, on hand-made rows (no data needed)."""

from __future__ import annotations

import pytest

from rlmcli import bench
from rlmcli.bench import codeqa, oolong, pairs
from rlmcli.errors import InputError


def oolong_row(gold: str, answer_type: str) -> dict:
    return {"task": "oolong", "answer": [gold], "meta": {"answer_type": f"ANSWER_TYPE.{answer_type}"}}


# --------------------------------------------------------------------------- OOLONG synth scorer


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Label: entity", 1.0),
        ("Label: **entity**", 1.0),  # OpenAI-style bold is stripped
        ("Label: [entity]", 1.0),  # Anthropic-style brackets are stripped
        ("After counting every line, the answer is\nLabel: entity", 1.0),  # text after the LAST colon
        ("Label: location", 0.0),
        ("entity", 1.0),  # no colon, under 20 characters: the whole output
        ("entity\n", 1.0),  # surrounding whitespace is ignored (our one deviation)
        ("I counted them all and the most common label is entity", 1.0),  # no colon, long: the last word
        ("I counted them all and the most common label is entity.", 0.0),  # ... taken literally
        ("Label: Entity", 0.0),  # exact match is case-sensitive
    ],
)
def test_oolong_label_answers(output, expected):
    assert bench.score(oolong_row("entity", "LABEL"), output) == expected


@pytest.mark.parametrize(
    ("output", "gold", "expected"),
    [
        ("Answer: location is more common than entity", "more common than", 1.0),  # >= 20 chars: phrase
        ("Answer: location is less common than entity", "more common than", 0.0),
        ("Answer: location is less common than entity", "less common than", 1.0),
        ("Answer: location is same frequency as entity", "same frequency as", 1.0),
        ("Answer: more common", "more common than", 1.0),  # short: kept, then contained in the gold
        ("Answer: same frequency", "same frequency as", 1.0),
        ("Answer: more common than", "more common than", 1.0),  # exact
        ("Answer: less common", "more common than", 0.0),
        ("Answer: it is more common", "the same frequency", 0.0),
        ("Answer: the same frequency", "the same frequency", 1.0),  # before/after-date wording
    ],
)
def test_oolong_comparison_phrases(output, gold, expected):
    assert bench.score(oolong_row(gold, "COMPARISON"), output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Answer: 10", 1.0),
        ("Answer: 11", 0.75),
        ("Answer: 12", 0.75**2),
        ("Answer: 7", 0.75**3),
        ("Answer: 40", 0.75**30),
        ("Answer: **10**", 1.0),
        ("Answer: ten", 0.0),
        ("Answer: 10.0", 0.0),  # int() of the official scorer rejects it
        ("Answer: 10 data points", 0.0),
    ],
)
def test_oolong_numeric_partial_credit(output, expected):
    assert bench.score(oolong_row("10", "NUMERIC"), output) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Date: 05/01/2023", 1.0),
        ("Date: 5/1/2023", 1.0),
        ("Date: 2023-05-01", 1.0),
        ("Date: May 01, 2023", 1.0),
        ("Date: May 1, 2023", 1.0),
        ("Date: 01/05/2023", 0.0),  # month first, as dateutil reads it: January 5
        ("Date: 05/02/2023", 0.0),
        ("Date: sometime in May", 0.0),
    ],
)
def test_oolong_dates(output, expected):
    assert bench.score(oolong_row("2023-05-01", "DATE"), output) == expected


def test_oolong_user_ids_match_exactly():
    row = oolong_row("48213", "USER")
    assert bench.score(row, "User: 48213") == 1.0
    assert bench.score(row, "User: 48214") == 0.0  # user IDs get no numeric partial credit


def test_oolong_parse_answer_mirrors_the_official_parser():
    assert oolong.parse_answer("Answer: [X]: 3") == "3"
    assert oolong.parse_answer("a very long answer without any colon at all: no") == "no"
    assert oolong.parse_answer("x" * 25) == "x" * 25  # one long word is its own last word


# --------------------------------------------------------------------------- OOLONG-Pairs F1


def pairs_row(gold: list[list[int]]) -> dict:
    return {"task": "oolong-pairs", "answer": gold, "meta": {}}


GOLD = [[10001, 10002], [10003, 10004]]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("(10001, 10002)\n(10003, 10004)", 1.0),
        ("(10002, 10001)\n(10004,10003)", 1.0),  # order inside a pair is irrelevant
        ("(10001, 10002)\n(10001, 10002)\n(10002, 10001)", 2 / 3),  # duplicates count once: P=1, R=1/2
        ("(10001, 10002)\n(10003, 10004)\n(10005, 10006)", 0.8),  # P=2/3, R=1
        ("(10001, 10002)", 2 / 3),
        ("Pairs: (10001, 10002) and [10003, 10004].", 1.0),  # prose around and brackets are fine
        ("(10005, 10006)", 0.0),
        ("", 0.0),
        ("No pairs satisfy the condition.", 0.0),
    ],
)
def test_pairs_f1(output, expected):
    assert bench.score(pairs_row(GOLD), output) == pytest.approx(expected)


def test_pairs_empty_vs_empty_is_one():
    assert bench.score(pairs_row([]), "") == 1.0
    assert bench.score(pairs_row([]), "There are no such pairs.") == 1.0
    assert bench.score(pairs_row([]), "(10001, 10002)") == 0.0


def test_pairs_helpers():
    assert pairs.parse_pairs("(3, 1) (1, 3) [2,9]") == {(1, 3), (2, 9)}
    assert pairs.pairs_f1({(1, 2)}, set()) == 0.0
    assert pairs.pairs_f1(set(), {(1, 2)}) == 0.0


# --------------------------------------------------------------------------- the other families


def test_sniah_fraction_of_gold_strings_case_insensitive():
    row = {"task": "sniah", "answer": ["ABC-123"], "meta": {}}
    assert bench.score(row, "the special magic uuid is abc-123.") == 1.0
    assert bench.score(row, "nothing here") == 0.0
    two = {"task": "sniah", "answer": ["1111111", "2222222"], "meta": {}}
    assert bench.score(two, "1111111") == 0.5


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("9f1c2d3e-0000-4000-8000-000000000001", 1.0),
        ('"9f1c2d3e-0000-4000-8000-000000000001"', 1.0),
        ("  Corresponding value: 9F1C2D3E-0000-4000-8000-000000000001 and more", 1.0),
        ("Final value: '9f1c2d3e-0000-4000-8000-000000000001'", 1.0),
        ("The value is 9f1c2d3e-0000-4000-8000-000000000001", 0.0),  # must START with the gold
        ("9f1c2d3e-0000-4000-8000-00000000000", 0.0),  # truncated
    ],
)
def test_needle_threading_starts_with(output, expected):
    row = {"task": "needle-threading", "answer": ["9f1c2d3e-0000-4000-8000-000000000001"], "meta": {}}
    assert bench.score(row, output) == expected


def test_needle_threading_multiple_needles_fraction():
    row = {"task": "needle-threading", "answer": ["aaa", "bbb"], "meta": {"scorer": "fraction_found"}}
    assert bench.score(row, "bbb\naaa") == 1.0
    assert bench.score(row, "aaa") == 0.5


def test_logs_scorer():
    count = {"task": "logs", "answer": ["12"], "meta": {"answer_type": "NUMERIC"}}
    assert bench.score(count, "There are 12 such lines.\nAnswer: 12") == 1.0
    big = {"task": "logs", "answer": ["1200"], "meta": {"answer_type": "NUMERIC"}}
    assert bench.score(big, "Answer: 1,200") == 1.0  # thousands separators are dropped
    assert bench.score(count, "Answer: 14") == pytest.approx(0.75**2)
    stamp = {"task": "logs", "answer": ["Jul 1 09:00:55"], "meta": {"answer_type": "TEXT"}}
    assert bench.score(stamp, "Answer: Jul  1 09:00:55") == 1.0  # runs of spaces as in syslog
    assert bench.score(stamp, "Answer: `Jul 1 09:00:55`.") == 1.0
    assert bench.score(stamp, "Answer: Jul 1 09:00:56") == 0.0
    comp = {"task": "logs", "answer": ["dfs.DataNode"], "meta": {"answer_type": "TEXT"}}
    assert bench.score(comp, "answer: DFS.datanode") == 1.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The correct answer is (B)", 1.0),
        ("**The correct answer is (B)**", 1.0),
        ("The correct answer is B", 1.0),
        ("The correct answer is (C)", 0.0),
        ("the correct answer is (B)", 0.0),  # LongBench-v2's sentence is matched case-sensitively
        # A bare letter is the same choice (an RLM's FINAL(B)); only the whole answer counts as one.
        ("B", 1.0),
        ("(B)", 1.0),
        ("**B.**", 1.0),
        ("  `B`\n", 1.0),
        ("C", 0.0),
        ("B or C", 0.0),
        ("Because of the code, B", 0.0),
    ],
)
def test_codeqa_letter_in_longbench_sentence_or_bare(output, expected):
    row = {"task": "codeqa", "answer": ["B"], "meta": {}}
    assert bench.score(row, output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("2", 1.0),  # the paper's prompt: "answer with exactly one number choice"
        ("(2)", 1.0),
        ("2.", 1.0),
        ("Answer: 2", 1.0),
        ("The answer is 2", 1.0),
        ("The correct answer is (2)", 1.0),
        ("3", 0.0),
        ("B", 0.0),  # a paper row asks for the index, not the letter
        ("12", 0.0),
        ("2 or 3", 0.0),
    ],
)
def test_codeqa_paper_rows_take_a_bare_index(output, expected):
    row = {"task": "codeqa", "answer": ["2"], "meta": {"answer_form": "index"}}
    assert bench.score(row, output) == expected


def test_codeqa_extract_answer_prefers_the_parenthesised_form():
    assert codeqa.extract_answer("The correct answer is A... no wait. The correct answer is (D)") == "D"
    assert codeqa.extract_answer("nothing") is None


def test_score_dispatch_clamps_and_rejects_unknown_tasks():
    assert bench.score(oolong_row("10", "NUMERIC"), None) == 0.0  # type: ignore[arg-type]
    with pytest.raises(InputError):
        bench.score({"task": "nope", "answer": [], "meta": {}}, "x")
