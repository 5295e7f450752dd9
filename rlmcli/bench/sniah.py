"""S-NIAH: RULER's single needle in a haystack (Hsieh et al., 2024, arXiv 2404.06654).

Faithful to NVIDIA/RULER scripts/data/synthetic/niah.py (Apache-2.0) and the `niah` entry of
scripts/eval/synthetic/constants.py:
- needle "One of the special magic {type_needle_v} for {key} is: {value}." with adjective-noun keys
  ("words") and 7-digit numbers or UUID4 values;
- the "repeat" (noise) haystack, "The grass is green. ... There and back again." joined by newlines,
  and an "essay" (prose) haystack split into sentences, the needle inserted at a sentence boundary
  int(len(sentences) * depth / 100);
- depths from RULER's grid np.round(np.linspace(0, 100, 40)); here swept evenly over the rows so a
  file covers the whole context instead of RULER's random draw;
- the template singularised exactly as niah.py does for one needle and one query.
Rows cycle over RULER's three single-needle configurations (synthetic.yaml niah_single_1..3).

RULER's essay haystack is Paul Graham's essays, which are not on this machine. Our prose haystack is
CPython's own documentation prose, `pydoc_data.topics` (the text behind `help('topics')`), which
ships with every CPython; it is part of the Python documentation, under the PSF License Version 2.
It is ~465k characters (~116k tokens), so haystacks longer than that repeat it; a repeated haystack
does not weaken a single-needle test because the needle sentence occurs exactly once.
Scorer: RULER's string_match_all, the fraction of gold strings found in the output, case-insensitive.
`--profile paper` sizes the haystack so that haystack + question are within `length` real tokens
(common.fit_tokens) instead of characters / 4. Every row records its gold location: the line of
the context that holds the needle (`meta.gold_lines`; a prose haystack is one line).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .common import char_budget, check_args, fit_tokens, make_row, random_uuid, rng, sha256_text

TASK = "sniah"
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
# constants.py TASKS['niah']: template + answer_prefix, which prepare.py concatenates.
RULER_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
RULER_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
# np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int), computed without numpy
# (round-half-even, as numpy rounds).
DEPTHS = [round(100 * i / 39) for i in range(40)]
# (RULER task, haystack, value type): synthetic.yaml niah_single_1, niah_single_2, niah_single_3.
VARIANTS = (
    ("niah_single_1", "noise", "numbers"),
    ("niah_single_2", "prose", "numbers"),
    ("niah_single_3", "prose", "uuids"),
)

# Our own adjective and noun lists stand in for the wonderwords lists RULER samples keys from
# (wonderwords is not a dependency); keys look the same, e.g. "quiet-lantern".
ADJECTIVES = (
    "amber ancient bitter brave brisk calm clever crimson curious dapper dusty eager early elegant "
    "faint fierce fluffy fragile gentle gleaming golden grumpy hollow humble icy idle jolly keen "
    "lively lucky mellow misty modest narrow noble odd pale patient plain polite proud quick quiet "
    "rapid rare restless rough rusty sandy shiny silent sleepy slender smooth snowy sour spare "
    "spiky steady stormy sturdy sunny swift tame tender tidy tiny vast velvet wary wild witty young"
).split()
NOUNS = (
    "acorn anchor anvil badger banjo barrel beacon beetle biscuit blanket bucket cabin candle canyon "
    "carpet castle cello cobweb comet compass cottage crayon dolphin donkey easel falcon feather "
    "ferry fiddle garden glacier goblet harbor hammer helmet island jacket kettle ladder lantern "
    "lemon lizard magnet meadow mitten needle orchard otter paddle parrot pebble pepper pillow "
    "puzzle quilt rabbit ribbon saddle shovel spindle teapot thimble tunnel umbrella valley walrus "
    "wagon whistle window zipper"
).split()


@functools.cache
def prose_text() -> str:
    """The pydoc topics text, topics in sorted order, underlines dropped, whitespace collapsed (as RULER)."""
    import pydoc_data.topics  # noqa: PLC0415 - stdlib data module, only needed here

    topics = pydoc_data.topics.topics
    text = "\n\n".join(topics[key] for key in sorted(topics))
    text = re.sub(r"([*=~^-])\1{3,}", " ", text)  # reST heading underlines are not prose
    return re.sub(r"\s+", " ", text).strip()


@functools.cache
def prose_sentences() -> tuple[str, ...]:
    # A stdlib stand-in for nltk's sent_tokenize: split after . ! ? before a capital letter.
    return tuple(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", prose_text()) if s)


@functools.cache
def prose_sha256() -> str:
    return sha256_text(prose_text())


def singular_template() -> tuple[str, str]:
    """RULER's template and answer prefix, singularised exactly as niah.py does for 1 needle/1 query."""
    template = RULER_TEMPLATE + RULER_ANSWER_PREFIX
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        template = template.replace(old, new)
    question_part, prefix = template.split("{context}\n")
    return question_part, prefix


def _depth_for(index: int, n: int) -> int:
    return DEPTHS[round(index * (len(DEPTHS) - 1) / (n - 1))] if n > 1 else DEPTHS[len(DEPTHS) // 2]


def _haystack(kind: str, budget: int, depth: int, needle: str) -> str:
    if kind == "noise":
        # RULER: [haystack] * num_haystack joined by "\n", needle inserted at a sentence index.
        count = max(1, (budget - len(needle) - 1) // (len(NOISE) + 1))
        sentences = [NOISE] * count
        sentences.insert(int(count * depth / 100), needle)
        return "\n".join(sentences)
    source = prose_sentences()
    sentences: list[str] = []
    used = len(needle)
    i = 0
    while used + len(source[i % len(source)]) + 1 <= budget:
        sentences.append(source[i % len(source)])
        used += len(sentences[-1]) + 1
        i += 1
    sentences.insert(int(len(sentences) * depth / 100), needle)
    return " ".join(sentences)


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    head, prefix = singular_template()
    rows = []
    for index in range(n):
        ruler_task, kind, value_type = VARIANTS[index % len(VARIANTS)]
        r = rng(TASK, seed, length, index)
        key = f"{r.choice(ADJECTIVES)}-{r.choice(NOUNS)}"
        value = str(r.randint(10**6, 10**7 - 1)) if value_type == "numbers" else random_uuid(r)
        needle = NEEDLE.format(type_needle_v=value_type, key=key, value=value)
        singular = value_type[:-1]
        question = f"What is the special magic {singular} for {key} mentioned in the provided text?"
        depth = _depth_for(index, n)
        if profile == "paper":
            context = fit_tokens(
                lambda chars, kind=kind, depth=depth, needle=needle, q=question: _haystack(
                    kind, chars - len(q) - 1, depth, needle
                ),
                lambda text, q=question: f"{text}\n{q}",
                length,
            )
        else:
            context = _haystack(kind, char_budget(length) - len(question) - 1, depth, needle)
        needle_line = context[: context.index(needle)].count("\n") + 1
        meta = {
            "ruler_task": ruler_task,
            "haystack": kind,
            "value_type": value_type,
            "key": key,
            "depth_percent": depth,
            # The exact RULER prompt, for a vanilla model that reads context and question together.
            "prompt_template": head.format(type_needle_v=singular)
            + "{context}\n"
            + prefix.format(type_needle_v=singular, query=key),
            "scorer": "ruler_string_match_all",
            "gold_lines": [[needle_line, needle_line]],  # where a citation should point
        }
        if kind == "prose":
            meta["haystack_source"] = "CPython pydoc_data.topics (PSF License)"
            meta["haystack_sha256"] = prose_sha256()
        rows.append(make_row(TASK, index, seed, length, context, question, [value], meta, profile))
    return rows


def score(output: str, row: dict[str, Any]) -> float:
    """RULER string_match_all: fraction of gold strings contained in the output, case-insensitive."""
    refs = [str(a) for a in row["answer"]]
    if not refs:
        return 0.0
    lowered = output.lower()
    return sum(1.0 for ref in refs if ref.lower() in lowered) / len(refs)
