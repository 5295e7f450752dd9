"""OOLONG-synth `trec_coarse` questions and the official synth scorer.

Question wording and gold rules follow abertsch72/oolong src/data_gen/oolong-synth/task_constructors.py:
CountingTasks (most / least common label, "how many data points should be classified as label X",
label A vs B more / less / same frequency) asked over all lines, over a subset of user IDs
(UserTasks) and over a month or a date range (TemporalTasks), plus "which user / date is represented
most often". Where the original asks an ambiguous question we skip it instead: "least common" with
a tied minimum (the official scorer only credits the first tied label), and user subsets of the
intended 10-20 top users rather than the single user that `min(1, ...)` in the original draws.

Scorer: src/eval/eval_helpers.py synth_attempt_answer_parse + synth_process_response: the answer is
the text after the last colon (asterisks and square brackets removed); exact string match scores 1;
"more common" / "less common" / "same frequency" score 1 when contained in the gold; numeric answers
score 0.75 ** |gold - pred|; dates score 1 when they parse to the gold date. Two deviations: the
output is stripped of surrounding whitespace first (a trailing newline should not cost the point),
and dates are parsed by the stdlib formats below instead of dateutil (month first, as dateutil).

`--profile paper`: the windows of trec.build_paper_window; the first 25 questions of each window in
the order they are generated (counting, then user, then timeline), as OOLONG's subsample.py keeps
them, a window with fewer than 25 being skipped as there; and the question text is the RLM paper's
root task description (arXiv 2512.24601, Appendix E.3) followed by "Answer the following: " and the
question, so every method reads the same words.
"""

from __future__ import annotations

import datetime
import itertools
from collections import Counter
from typing import Any

from .common import check_args, make_row, rng
from .trec import Instance, Window, build_window, format_date, window

TASK_DESCRIPTION = (  # Appendix E.3, with the window's own label order
    "The following lines contain thousands of general-knowledge questions, one per line. Each line has a "
    "User ID, which is not necessarily unique, i.e. each User ID can be associated with multiple questions. "
    "Each question has an answer that can be described as one of {count} categories: {labels} -- remember "
    "that they are not explicitly labeled, so you need to figure out the label from the semantics of the "
    "question. You will be asked to answer questions about the aggregate label statistics across all "
    "examples in this dataset. Do not try to guess, estimate, or approximate the result. Answer the "
    "following: "
)

TASK = "oolong"
QUESTIONS_PER_WINDOW = 25  # OOLONG asks many questions of each context window
COMPARISONS = ("more common", "less common", "same frequency")
MONTHS = ("January February March April May June July August September October November December").split()
ABOVE = "In the above data,"
Question = dict[str, Any]


def _q(group: str, kind: str, answer_type: str, text: str, gold: object) -> Question:
    return {"group": group, "kind": kind, "answer_type": answer_type, "question": text, "gold": str(gold)}


def counting_questions(counts: dict[str, int], group: str) -> list[Question]:
    """CountingTasks(true_counts): `counts` keeps the label order the questions list labels in."""
    out: list[Question] = []
    total = sum(counts.values())
    if total == 0:
        return out
    label_list = ", ".join(counts)
    freq = {label: c / total for label, c in counts.items()}
    top = max(counts.values())
    tops = [k for k in counts if counts[k] == top]
    # Asked only with a unique maximum more than 2% (of all lines) ahead of every other label.
    if len(tops) == 1 and all(abs(freq[tops[0]] - freq[k]) > 0.02 for k in counts if k != tops[0]):
        text = (
            f"{ABOVE} which of the labels is the most common? Give your final answer in the form "
            f"'Label: answer' where answer is one of the labels: {label_list}."
        )
        out.append(_q(group, "MOST_FREQ", "LABEL", text, tops[0]))
    low = min(counts.values())
    lows = [k for k in counts if counts[k] == low]
    if len(lows) == 1:
        text = (
            f"{ABOVE} which of the labels is the least common? Give your final answer in the form "
            f"'Label: answer' where answer is one of the labels: {label_list}."
        )
        out.append(_q(group, "LEAST_FREQ", "LABEL", text, lows[0]))
    for a, b in itertools.combinations(counts, 2):
        diff = freq[a] - freq[b]
        if abs(diff) > 0.02 or diff == 0:
            relation = (
                "more common than"
                if counts[a] > counts[b]
                else "less common than"
                if counts[a] < counts[b]
                else "same frequency as"
            )
            text = (
                f"{ABOVE} is label '{a}' more common, less common, or the same frequency as label '{b}'? "
                f"Give your final answer in the form 'Answer: {a} is [X] {b}', where [X] is 'more common "
                "than', 'less common than', or 'same frequency as'."
            )
            out.append(_q(group, "RELATIVE_FREQ", "COMPARISON", text, relation))
    for label in counts:
        text = (
            f"{ABOVE} how many data points should be classified as label '{label}'? "
            "Give your final answer in the form 'Answer: number'."
        )
        out.append(_q(group, "NUMERIC_ONE_CLASS", "NUMERIC", text, counts[label]))
    return out


def _restricted(questions: list[Question], prefix: str) -> list[Question]:
    for q in questions:
        q["question"] = q["question"].replace(ABOVE, prefix)
        q["input_subset"] = True
    return questions


def _unique_top(counter: Counter) -> object | None:
    ranked = counter.most_common(2)
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _present(instances: list[Instance] | tuple[Instance, ...], labels: tuple[str, ...]) -> dict[str, int]:
    # dict(Counter(...)) in the original: only labels that occur, here in the header's order.
    counts = Counter(inst.label for inst in instances)
    return {label: counts[label] for label in labels if counts[label]}


def window_questions(window: Window, seed: int, length: int) -> list[Question]:
    r = rng("oolong-questions", seed, length, window.index)
    insts = window.instances
    all_counts = Counter(inst.label for inst in insts)
    out = counting_questions({label: all_counts[label] for label in window.labels}, "counting")

    # UserTasks: global user questions, then counting over a subset of the most frequent users.
    users = Counter(inst.user for inst in insts)
    top = _unique_top(users)
    if top is not None:
        text = (
            f"{ABOVE} which user is represented most often? Give your final answer in the form "
            "'User: [X]', where [X] is the user ID."
        )
        out.append(_q("user", "MOST_FREQ", "USER", text, top))
    for label in window.labels:
        best = _unique_top(Counter(inst.user for inst in insts if inst.label == label))
        if best is not None:
            text = (
                f"{ABOVE} which user has the most instances with the label {label}? Give your final "
                "answer in the form 'User: [X]', where [X] is the user ID."
            )
            out.append(_q("user", "MOST_FREQ", "USER", text, best))
    ranked = sorted(users.items(), key=lambda kv: (-kv[1], kv[0]))[: min(50, len(users))]
    size = max(1, min(r.randint(0, 10) + 10, int(len(ranked) * 0.8)))
    subset = [user for user, _ in r.sample(ranked, size)]
    names = ", ".join(str(u) for u in subset)
    chosen = set(subset)
    sub = [inst for inst in insts if inst.user in chosen]
    prefix = (
        f"For the following question, only consider the subset of instances that are associated with user "
        f"IDs {names}. Among instances associated with these users,"
    )
    out += _restricted(counting_questions(_present(sub, window.labels), "user"), prefix)

    # TemporalTasks: most frequent date, counting within a month, counting within a date range.
    top_day = _unique_top(Counter(inst.date for inst in insts))
    if isinstance(top_day, datetime.date):
        text = (
            f"{ABOVE} which date is represented most often? Give your final answer in the form "
            "'Date: [X]', where [X] is the date in the format MM/DD/YYYY."
        )
        out.append(_q("timeline", "MOST_FREQ", "DATE", text, top_day.isoformat()))
    months_present = sorted({inst.date.month for inst in insts})
    month = r.choice(months_present)
    name = MONTHS[month - 1]
    prefix = (
        f"For the following question, only consider the subset of instances that occur in {name} of any "
        f"year. Among instances occuring in {name},"  # sic: "occuring", as in the original
    )
    in_month = [inst for inst in insts if inst.date.month == month]
    out += _restricted(counting_questions(_present(in_month, window.labels), "timeline"), prefix)
    by_date = sorted(insts, key=lambda inst: inst.date)
    n = len(by_date)
    if n > 12:
        start = r.randint(int(n * 0.1), int(n * 0.5))
        while start > 0 and by_date[start - 1].date == by_date[start].date:
            start -= 1
        end = min(r.randint(start + 10, max(start + 12, int(n * 0.9))), n - 1)
        while end < n - 1 and by_date[end + 1].date == by_date[end].date:
            end += 1
        first, last = by_date[start].date, by_date[end].date
        prefix = (
            "For the following question, only consider the subset of instances that occur between "
            f"{format_date(first)} and {format_date(last)}, inclusive. "
            "Among instances occuring in this date range,"
        )
        in_range = [inst for inst in insts if first <= inst.date <= last]
        out += _restricted(counting_questions(_present(in_range, window.labels), "timeline"), prefix)
    return out


def _meta(window: Window, pick: Question) -> dict[str, Any]:
    return {
        "dataset": "trec_coarse",
        "context_window_id": window.index,
        "num_instances": len(window.instances),
        "labels": list(window.labels),
        "task_group": pick["group"],
        "task_type": f"TASK_TYPE.{pick['kind']}",
        "answer_type": f"ANSWER_TYPE.{pick['answer_type']}",
        "input_subset": bool(pick.get("input_subset", False)),
        "scorer": "oolong_synth",
    }


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    if profile == "paper":
        return _generate_paper(n, length, seed)
    rows = []
    for index in range(n):
        window = build_window(seed, length, index // QUESTIONS_PER_WINDOW)
        questions = window_questions(window, seed, length)
        # Rotate over (group, kind) so every file mixes all question types, then draw one of that type.
        kinds = sorted({(q["group"], q["kind"]) for q in questions})
        kind = kinds[(index % QUESTIONS_PER_WINDOW) % len(kinds)]
        same_kind = [q for q in questions if (q["group"], q["kind"]) == kind]
        pick = rng(TASK, seed, length, index).choice(same_kind)
        meta = _meta(window, pick)
        rows.append(make_row(TASK, index, seed, length, window.text, pick["question"], [pick["gold"]], meta))
    return rows


def paper_question(labels: tuple[str, ...] | list[str], question: str) -> str:
    named = ", ".join(f"'{label}'" for label in labels)
    return TASK_DESCRIPTION.format(count=len(labels), labels=named) + question


def _generate_paper(n: int, length: int, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    index = 0
    for w in range(n + 1000):  # a window short of 25 questions is skipped; far fewer ever are
        if len(rows) == n:
            break
        paper_window = window(seed, length, w, "paper")
        questions = window_questions(paper_window, seed, length)
        if len(questions) < QUESTIONS_PER_WINDOW:
            continue
        for position, pick in enumerate(questions[: min(QUESTIONS_PER_WINDOW, n - len(rows))]):
            meta = _meta(paper_window, pick)
            # The window's label counts and the softmax they come from, so a reader can check them.
            counts = Counter(inst.label for inst in paper_window.instances)
            meta.update(
                question_index=position,
                oolong_question=pick["question"],
                label_counts={label: counts[label] for label in paper_window.labels},
                label_distribution=list(paper_window.distribution),
            )
            text = paper_question(paper_window.labels, pick["question"])
            gold = [pick["gold"]]
            rows.append(make_row(TASK, index, seed, length, paper_window.text, text, gold, meta, "paper"))
            index += 1
    if len(rows) < n:
        raise ValueError(f"length {length} gives too few OOLONG questions per window")
    return rows


def parse_answer(output: str) -> str:
    """synth_attempt_answer_parse, returning only the candidate answer."""
    answer = output.strip()
    if ":" not in answer:
        return answer if len(answer) < 20 else answer.split()[-1]
    candidate = answer.split(":")[-1].strip().replace("*", "").replace("[", "").replace("]", "")
    if len(candidate) >= 20:
        for phrase in COMPARISONS:
            if phrase in candidate:
                return phrase
    return candidate


# Month-first numeric forms (dateutil's default), ISO, and spelled-out months.
_DATE_FORMATS = (
    "%m/%d/%Y",
    "%Y-%m-%d",
    "%m-%d-%Y",
    "%Y/%m/%d",
    "%b %d, %Y",
    "%B %d, %Y",
    "%d %B %Y",
    "%d %b %Y",
)


def parse_date(text: str) -> datetime.date | None:
    cleaned = text.strip().rstrip(".").strip()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.datetime.strptime(cleaned, fmt).date()
        except ValueError:
            continue
    return None


def score(output: str, row: dict[str, Any]) -> float:
    """synth_process_response's score for one output."""
    gold = str(row["answer"][0])
    answer_type = str(row["meta"]["answer_type"])
    pred = parse_answer(output)
    if pred == gold:
        return 1.0
    if pred in COMPARISONS:  # "more common" is credited when the gold is "more common than"
        return 1.0 if pred in gold else 0.0
    if answer_type.endswith("NUMERIC"):
        try:
            return 0.75 ** abs(int(gold) - int(pred))
        except ValueError:
            return 0.0
    if answer_type.endswith("DATE"):
        parsed = parse_date(pred)
        return 1.0 if parsed is not None and parsed == datetime.date.fromisoformat(gold) else 0.0
    return 0.0
