"""OOLONG-synth `trec_coarse` context windows built from the TREC question-classification data.

Source: abertsch72/oolong, src/data_gen/oolong-synth/ (Bertsch et al., 2025, arXiv 2511.02817):
- datasets_loader.py: the header and footer wording (get_general_desc, TREC_Coarse.get_desc) and the
  label names;
- example_constructor.py: label proportions softmax([randint(1, 30) ** (1 / T)]) with T = randint(2, 6)
  over the shuffled labels, duplicating examples when a label runs short;
- utils.py: user IDs from generate_skewed_user_ids (10% of n IDs are "common" and get 80% of the
  lines; 5-digit IDs) and dates uniform over 2022-02-16..2025-06-21, printed "%b %d, %Y";
- EvalContextWindow.get_prompt: "Date: {date} || User: {user} || Instance: {text}" lines.
Differences, all forced by what is offline or by the token estimate: OOLONG uses its validated subset
of TREC (validated_data/trec_coarse_validated.jsonl) and we use all 5,952 lines of TREC.train and
TREC.test; OOLONG fixes the number of lines from per-line token averages (count = 0.95 * length -
prompt - 250 question tokens, / 39) and draws exact per-label counts, while we draw each line's label
from the same distribution and add lines while header + lines + footer stay within the length minus
a 250-token question reserve (chars / 4). The same (seed, length, window) gives the same window to
`oolong` and `oolong-pairs`, as the RLM paper builds OOLONG-Pairs over OOLONG's trec_coarse contexts.

`--profile paper` (build_paper_window) follows OOLONG's example_constructor.construct_context
instead: the validated pool (shared/data/oolong/trec_coarse_validated.jsonl, 4,151 questions), N =
floor((0.95 L - 168 - 250) / 39) lines (datasets_loader.get_examples_in_context with TREC_Coarse's
PROMPT_TOKENS and PER_EXAMPLE_TOKENS), exact per-label counts round(softmax(...) * N) with the
rounding error taken off the first label, each label's questions drawn without replacement from
enough copies of its pool, and users and dates assigned over the N lines as utils.py does.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from dataclasses import dataclass

from .common import char_budget, data_path, rng

# TREC coarse class -> OOLONG wording (datasets_loader.TREC_Coarse.label_map).
COARSE_TO_LABEL = {
    "ABBR": "abbreviation",
    "DESC": "description and abstract concept",
    "ENTY": "entity",
    "HUM": "human being",
    "LOC": "location",
    "NUM": "numeric value",
}
LABELS = (
    "abbreviation",
    "entity",
    "description and abstract concept",
    "human being",
    "location",
    "numeric value",
)
QUESTION_RESERVE_TOKENS = 250  # EvalDataset.QUESTION_TOKENS
PROMPT_TOKENS, PER_EXAMPLE_TOKENS = 168, 39  # datasets_loader.TREC_Coarse (GPT-4 tokenizer averages)
DATE_START = datetime.date(2022, 2, 16)
DATE_END = datetime.date(2025, 6, 21)
MIN_USER, MAX_USER = 10000, 99999


@dataclass(frozen=True)
class Instance:
    date: datetime.date
    user: int
    text: str
    label: str

    def line(self) -> str:
        return f"Date: {format_date(self.date)} || User: {self.user} || Instance: {self.text}"


@dataclass(frozen=True)
class Window:
    index: int
    labels: tuple[str, ...]  # in the order the header lists them
    instances: tuple[Instance, ...]
    text: str
    distribution: tuple[float, ...] = ()  # paper profile: the softmax the per-label counts come from


def format_date(day: datetime.date) -> str:
    return day.strftime("%b %d, %Y")


@functools.cache
def load_trec() -> tuple[tuple[str, str], ...]:
    """(question text, OOLONG label) for every line of TREC.train then TREC.test."""
    rows = []
    for name in ("TREC.train", "TREC.test"):
        # The files are Latin-1 (TREC.train has a few non-ASCII bytes that are not valid UTF-8).
        text = data_path("trec", name).read_bytes().decode("latin-1")
        for line in text.splitlines():
            if not line.strip():
                continue
            label, question = line.split(" ", 1)
            rows.append((question.strip(), COARSE_TO_LABEL[label.split(":", 1)[0]]))
    return tuple(rows)


@functools.cache
def load_validated() -> tuple[tuple[str, str], ...]:
    """(question text, OOLONG label) for every line of OOLONG's validated trec_coarse pool, in file
    order; OOLONG's loader keeps `input` and `label` and uses every row."""
    rows = []
    with open(data_path("oolong", "trec_coarse_validated.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                rows.append((str(item["input"]).replace("\n", " "), str(item["label"])))
    return tuple(rows)


def paper_line_count(length: int) -> int:
    """OOLONG's lines per window: int((0.95 L - PROMPT_TOKENS - QUESTION_TOKENS) // 39)."""
    return int((length * 0.95 - PROMPT_TOKENS - QUESTION_RESERVE_TOKENS) // PER_EXAMPLE_TOKENS)


def paper_label_counts(distribution: tuple[float, ...], n: int) -> list[int]:
    """construct_context: counts = round(distribution * n), then counts[0] -= sum(counts) - n.
    (torch rounds half to even, as Python's round does.) Should that take the first label below
    zero, which OOLONG does not guard against, the correction goes to the largest label instead."""
    counts = [round(p * n) for p in distribution]
    excess = sum(counts) - n
    first = 0 if counts[0] - excess >= 0 else counts.index(max(counts))
    counts[first] -= excess
    return counts


def describe(n: int, labels: tuple[str, ...], intro: bool) -> str:
    """EvalDataset.get_general_desc with TREC_Coarse.get_desc's specific text."""
    start = "The following" if intro else "Recall: the preceding"
    chosen = ", ".join(f"'{label}'" for label in labels)
    specific = (
        "general-knowledge questions, one per line. Each question has an answer that can be described "
        f"as one of {len(labels)} categories: {chosen}."
    )
    return (
        f"{start} lines contain {n} {specific}\n\nYou will be asked to answer questions about the aggregate "
        f"label statistics across all {n} examples in this dataset. Do not try to guess, estimate, or "
        "approximate the result. Calculate the exact answer given these datapoints.\n\n"
    )


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


@functools.lru_cache(maxsize=8)
def build_window(seed: int, length: int, index: int) -> Window:
    r = rng("oolong-window", seed, length, index)
    labels = list(LABELS)
    r.shuffle(labels)
    temperature = r.randint(2, 6)
    weights = _softmax([r.randint(1, 30) ** (1 / temperature) for _ in labels])

    by_label: dict[str, list[str]] = {label: [] for label in labels}
    for text, label in load_trec():
        by_label[label].append(text)
    pools = {label: [] for label in labels}

    def draw(label: str) -> str:
        # Sample without replacement; start a fresh shuffled pass when a label runs out, which is
        # OOLONG's "using duplicate examples" for labels with fewer examples than requested.
        if not pools[label]:
            pools[label] = list(by_label[label])
            r.shuffle(pools[label])
        return pools[label].pop()

    budget = char_budget(length) - char_budget(QUESTION_RESERVE_TOKENS)
    mean_line = 48 + sum(len(t) for t, _ in load_trec()) / len(load_trec())
    estimate = max(1, int(budget / mean_line))
    common = r.sample(range(MIN_USER, MAX_USER + 1), max(int(estimate * 0.1), 1))
    common_set = set(common)

    def user() -> int:
        if r.random() < 0.8:
            return r.choice(common)
        while True:  # an "uncommon" ID: any 5-digit ID outside the common pool
            candidate = r.randint(MIN_USER, MAX_USER)
            if candidate not in common_set:
                return candidate

    days = (DATE_END - DATE_START).days
    instances: list[Instance] = []
    used = 0
    while True:
        label = r.choices(labels, weights)[0]
        inst = Instance(DATE_START + datetime.timedelta(days=r.randint(0, days)), user(), draw(label), label)
        count = len(instances) + 1
        frame = len(describe(count, tuple(labels), True)) + len(describe(count, tuple(labels), False))
        if used + len(inst.line()) + 1 + frame > budget:
            break
        instances.append(inst)
        used += len(inst.line()) + 1
    if not instances:
        raise ValueError(f"length {length} is too small for one OOLONG line")
    body = "".join(inst.line() + "\n" for inst in instances)
    count, order = len(instances), tuple(labels)
    text = describe(count, order, True) + body + describe(count, order, False)
    return Window(index, tuple(labels), tuple(instances), text)


@functools.lru_cache(maxsize=8)
def build_paper_window(seed: int, length: int, index: int) -> Window:
    """An OOLONG trec_coarse window as OOLONG's construct_context builds it (module docstring)."""
    r = rng("oolong-paper-window", seed, length, index)
    n = paper_line_count(length)
    if n < 1:
        raise ValueError(f"length {length} is too small for one OOLONG line")
    labels = r.sample(list(LABELS), len(LABELS))  # random.sample(labels, num_label_classes)
    r.shuffle(labels)
    temperature = r.randint(2, 6)  # generate_dataset.py draws it per window
    distribution = tuple(_softmax([r.randint(1, 30) ** (1 / temperature) for _ in labels]))
    counts = paper_label_counts(distribution, n)
    by_label: dict[str, list[str]] = {label: [] for label in labels}
    for text, label in load_validated():
        by_label[label].append(text)
    drawn: list[tuple[str, str]] = []
    for label, count in zip(labels, counts, strict=True):
        pool = by_label[label] * math.ceil(count / len(by_label[label]))  # "using duplicate examples"
        order = list(range(len(pool)))
        r.shuffle(order)
        drawn += [(pool[i], label) for i in order[:count]]
    r.shuffle(drawn)  # final_data.shuffle()
    # utils.generate_skewed_user_ids(n) and sample_random_dates(n), in that order.
    common = r.sample(range(MIN_USER, MAX_USER + 1), max(int(n * 0.1), 1))
    common_set = set(common)
    users = []
    for _ in range(n):
        if r.random() < 0.8:
            users.append(r.choice(common))
        else:
            while (candidate := r.randint(MIN_USER, MAX_USER)) in common_set:
                pass
            users.append(candidate)
    days = (DATE_END - DATE_START).days
    dates = [DATE_START + datetime.timedelta(days=r.randint(0, days)) for _ in range(n)]
    instances = [Instance(d, u, text, label) for (text, label), u, d in zip(drawn, users, dates, strict=True)]
    r.shuffle(instances)  # get_prompt lists the lines in a shuffled order of their own
    order = tuple(labels)
    body = "".join(inst.line() + "\n" for inst in instances)
    text = describe(n, order, True) + body + describe(n, order, False)
    return Window(index, order, tuple(instances), text, distribution)


def window(seed: int, length: int, index: int, profile: str = "cli") -> Window:
    return (
        build_paper_window(seed, length, index) if profile == "paper" else build_window(seed, length, index)
    )
