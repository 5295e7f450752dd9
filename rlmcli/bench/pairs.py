"""OOLONG-Pairs: the 20 pair queries of the RLM paper (Zhang, Kraska, Khattab; arXiv 2512.24601,
Appendix D.1) over OOLONG trec_coarse context windows, with gold computed from the TREC labels.

The query texts are the paper's, verbatim. The paper gives no gold program, so the semantics are
written down here (and in docs/BENCHMARKS.md):
- a pair is two distinct user IDs that occur in the window, listed lower ID first, each pair once;
- "X or Y": the user has at least one instance labelled X or at least one labelled Y;
- "all instances that are a L for both users must be after/before D": every instance of label L of
  each user is strictly after/before D; it holds vacuously for a user with no instance of L;
- "one user has A, and the other user has B": either user may take either role, i.e. the pair
  matches when (u has A and v has B) or (u has B and v has A);
- "exactly k instances with L" counts that user's instances of L; "at least k" is >= k.
Rows i = 0..19 share window 0 and ask query i + 1 (the paper asks all 20 queries of one context per
length); row 20 starts window 1, and so on. Scorer: F1 between the set of (a, b) pairs parsed from
the output and the gold set (order inside a pair and duplicates ignored; empty vs empty is 1).

`--profile paper`: the windows of trec.build_paper_window (OOLONG's line count, validated pool and
label counts), and the question as the paper's trajectory in Appendix E.2 shows the root received
it: "Answer the following: ", the query, then PAPER_SUFFIX (sorted by first user ID, an example,
"[]" for no answer). The scorer reads both answer forms: pairs on lines or after commas, and "[]".
"""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .common import check_args, make_row
from .trec import Instance, window

TASK = "oolong-pairs"
SUFFIX = (
    "Each of the questions can be labelled as one of the labels (the data does not provide the labels, you "
    "need to figure out the label from the semantics of the question): description and abstract concept, "
    "entity, human being, numeric value, location, abbreviation. In your answer, list all pairs in the "
    "format (user_id_1, user_id_2), separated by newlines."
)
PAPER_SUFFIX = (  # Appendix E.2
    " Your answer must be sorted by first user ID. For example, if the answer is the Instance ID pairs "
    "(22740, 35839) and (35839, 52032), you should return '(22740, 35839), (35839, 52032)'. If there is "
    "no answer, return an empty list []."
)
LEAD = "In the above data, list all pairs of user IDs (no duplicate pairs, list lower ID first)"
DESC, ENTY, HUM, NUM, LOC, ABBR = (
    "description and abstract concept",
    "entity",
    "human being",
    "numeric value",
    "location",
    "abbreviation",
)

# A role is a tuple of (label, op, k) count conditions: op ">=" or "==".
Role = tuple[tuple[str, str, int], ...]


@dataclass(frozen=True)
class Query:
    number: int
    text: str
    any_of: tuple[str, ...] = ()  # symmetric queries: both users have >= 1 instance of one of these
    date: DateRule | None = None  # (label, "after" | "before", cutoff)
    role_a: Role = ()  # asymmetric queries: one user satisfies role_a, the other role_b
    role_b: Role = ()


DateRule = tuple[str, str, datetime.date]


def _sym(number: int, condition: str, a: str, b: str, date: DateRule | None = None) -> Query:
    text = f"{LEAD} where both users have at least one instance with {condition}. {SUFFIX}"
    return Query(number, text, (a, b), date)


def _asym(number: int, condition: str, role_a: Role, role_b: Role) -> Query:
    return Query(number, f"{LEAD} such that {condition}. {SUFFIX}", role_a=role_a, role_b=role_b)


D = datetime.date
QUERIES = (
    _sym(1, "a numeric value or location", NUM, LOC),
    _sym(2, "an entity or human being", ENTY, HUM),
    _sym(3, "a description and abstract concept or abbreviation", DESC, ABBR),
    _sym(
        4,
        "a human being or location, and all instances that are a human being for both users "
        "must be after January 6, 2023",
        HUM,
        LOC,
        (HUM, "after", D(2023, 1, 6)),
    ),
    _sym(
        5,
        "an entity or numeric value, and all instances that are an entity for both users "
        "must be before March 15, 2023",
        ENTY,
        NUM,
        (ENTY, "before", D(2023, 3, 15)),
    ),
    _sym(6, "a location or abbreviation", LOC, ABBR),
    _sym(
        7,
        "a description and abstract concept or numeric value, and all instances that are a "
        "numeric value for both users must be after February 1, 2023",
        DESC,
        NUM,
        (NUM, "after", D(2023, 2, 1)),
    ),
    _sym(8, "a human being or description and abstract concept", HUM, DESC),
    _sym(
        9,
        "an entity or location, and all instances that are a location for both users "
        "must be after April 10, 2023",
        ENTY,
        LOC,
        (LOC, "after", D(2023, 4, 10)),
    ),
    _sym(
        10,
        "a numeric value or abbreviation, and all instances that are an abbreviation for both users "
        "must be before May 20, 2023",
        NUM,
        ABBR,
        (ABBR, "before", D(2023, 5, 20)),
    ),
    _asym(
        11,
        "one user has at least one instance with entity and one with abbreviation, "
        "and the other user has exactly one instance with entity",
        ((ENTY, ">=", 1), (ABBR, ">=", 1)),
        ((ENTY, "==", 1),),
    ),
    _asym(
        12,
        "one user has at least two instances with numeric value, and the other user has "
        "at least one instance with location and at least one instance with human being",
        ((NUM, ">=", 2),),
        ((LOC, ">=", 1), (HUM, ">=", 1)),
    ),
    _asym(
        13,
        "one user has exactly one instance with description and abstract concept, and the other user "
        "has at least one instance with abbreviation and at least one instance with entity",
        ((DESC, "==", 1),),
        ((ABBR, ">=", 1), (ENTY, ">=", 1)),
    ),
    _asym(
        14,
        "one user has at least one instance with human being and at least one instance with "
        "numeric value, and the other user has exactly two instances with location",
        ((HUM, ">=", 1), (NUM, ">=", 1)),
        ((LOC, "==", 2),),
    ),
    _asym(
        15,
        "one user has at least one instance with entity, at least one instance with location, "
        "and at least one instance with abbreviation, and the other user has exactly one instance "
        "with numeric value",
        ((ENTY, ">=", 1), (LOC, ">=", 1), (ABBR, ">=", 1)),
        ((NUM, "==", 1),),
    ),
    _asym(
        16,
        "one user has at least one instance with description and abstract concept and at least one "
        "instance with human being, and the other user has at least two instances with entity and "
        "exactly one instance with abbreviation",
        ((DESC, ">=", 1), (HUM, ">=", 1)),
        ((ENTY, ">=", 2), (ABBR, "==", 1)),
    ),
    _asym(
        17,
        "one user has exactly one instance with numeric value, and the other user has at least one "
        "instance with location and at least one instance with description and abstract concept",
        ((NUM, "==", 1),),
        ((LOC, ">=", 1), (DESC, ">=", 1)),
    ),
    _asym(
        18,
        "one user has at least one instance with abbreviation and exactly one instance with human "
        "being, and the other user has at least one instance with entity and at least one instance "
        "with numeric value",
        ((ABBR, ">=", 1), (HUM, "==", 1)),
        ((ENTY, ">=", 1), (NUM, ">=", 1)),
    ),
    _asym(
        19,
        "one user has at least two instances with location and at least one instance with entity, "
        "and the other user has exactly one instance with description and abstract concept and "
        "exactly one instance with abbreviation",
        ((LOC, ">=", 2), (ENTY, ">=", 1)),
        ((DESC, "==", 1), (ABBR, "==", 1)),
    ),
    _asym(
        20,
        "one user has at least one instance with numeric value and at least one instance with human "
        "being, and the other user has at least one instance with location, at least one instance "
        "with entity, and exactly one instance with abbreviation",
        ((NUM, ">=", 1), (HUM, ">=", 1)),
        ((LOC, ">=", 1), (ENTY, ">=", 1), (ABBR, "==", 1)),
    ),
)


def _role_holds(role: Role, counts: dict[str, int]) -> bool:
    return all(
        counts.get(label, 0) >= k if op == ">=" else counts.get(label, 0) == k for label, op, k in role
    )


def _symmetric_holds(query: Query, instances: list[Instance]) -> bool:
    if not any(inst.label in query.any_of for inst in instances):
        return False
    if query.date is None:
        return True
    label, relation, cutoff = query.date
    dates = [inst.date for inst in instances if inst.label == label]  # empty: holds vacuously
    return all(d > cutoff for d in dates) if relation == "after" else all(d < cutoff for d in dates)


def gold_pairs(query: Query, instances: tuple[Instance, ...]) -> list[list[int]]:
    by_user: dict[int, list[Instance]] = defaultdict(list)
    for inst in instances:
        by_user[inst.user].append(inst)
    users = sorted(by_user)
    if query.any_of:
        ok = [u for u in users if _symmetric_holds(query, by_user[u])]
        return [[a, b] for i, a in enumerate(ok) for b in ok[i + 1 :]]
    counts = {u: _label_counts(by_user[u]) for u in users}
    in_a = {u for u in users if _role_holds(query.role_a, counts[u])}
    in_b = {u for u in users if _role_holds(query.role_b, counts[u])}
    pairs = {(min(a, b), max(a, b)) for a in in_a for b in in_b if a != b}
    return [list(p) for p in sorted(pairs)]


def _label_counts(instances: list[Instance]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for inst in instances:
        counts[inst.label] += 1
    return counts


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    rows = []
    for index in range(n):
        context_window = window(seed, length, index // len(QUERIES), profile)
        query = QUERIES[index % len(QUERIES)]
        gold = gold_pairs(query, context_window.instances)
        meta = {
            "dataset": "trec_coarse",
            "context_window_id": context_window.index,
            "query": query.number,
            "num_instances": len(context_window.instances),
            "num_users": len({inst.user for inst in context_window.instances}),
            "num_gold_pairs": len(gold),
            "scorer": "pairs_f1",
        }
        text = f"Answer the following: {query.text}{PAPER_SUFFIX}" if profile == "paper" else query.text
        rows.append(make_row(TASK, index, seed, length, context_window.text, text, gold, meta, profile))
    return rows


_PAIR = re.compile(r"[(\[]\s*(\d+)\s*,\s*(\d+)\s*[)\]]")


def parse_pairs(output: str) -> set[tuple[int, int]]:
    """Every "(a, b)" (or "[a, b]") in the output, as (lower, higher)."""
    return {(min(int(a), int(b)), max(int(a), int(b))) for a, b in _PAIR.findall(output)}


def pairs_f1(predicted: set[tuple[int, int]], gold: set[tuple[int, int]]) -> float:
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def score(output: str, row: dict[str, Any]) -> float:
    gold = {(min(int(a), int(b)), max(int(a), int(b))) for a, b in row["answer"]}
    return pairs_f1(parse_pairs(output), gold)
