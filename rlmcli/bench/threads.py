"""Needle threading: key-value retrieval and multi-hop threads in a JSON object of UUID -> UUID pairs.

After Roberts, Han & Albanie, "Needle Threading: Can LLMs Follow Threads through Near-Million-Scale
Haystacks?" (ICLR 2025, arXiv 2411.05000; jonathan-roberts1/needle-threading). Their haystack is one
JSON object of random UUID keys and values; the single-needle question below is their wording
(README example); the multiple-needle and thread wordings are ours, as their other prompts are not
in the released README. Rows cycle over four variants:
- single needle: one key, placed at a depth swept evenly over the rows;
- multiple needles: 2-5 keys at random places, values asked in the order of the keys;
- thread forward / backward: a chain k0 -> k1 -> ... -> kh of h = 2, 3, 5 or 8 hops in which each
  value is the next key, each hop placed after (forward) or before (backward) the previous one.
Scorer (their README's rule): the output, less leading whitespace, quotes, brackets and a leading
"... value:" label, must start with the gold value; for multiple needles, the fraction of the gold
values the output contains (our rule, as the output is a list).
`--profile paper` sizes the object so that it and the question are within `length` real tokens.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .common import char_budget, check_args, fit_tokens, make_row, random_uuid, rng

TASK = "needle-threading"
VARIANTS = ("single_needle", "multiple_needles", "thread_forward", "thread_backward")
THREAD_HOPS = (2, 3, 5, 8)
PAIR_CHARS = 36 + 36 + 8  # '"uuid": "uuid", '
SINGLE = (
    'Extract the value corresponding to the specified key in the JSON object. Key: "{key}"\n'
    " Corresponding value: "
)
MULTIPLE = (
    "Extract the values corresponding to the specified keys in the JSON object. Give the values in the "
    "order of the keys, one per line. Keys: {keys}\n Corresponding values: "
)
THREAD = (
    "The specified key starts a thread in the JSON object: its value is itself a key of the object, whose "
    "value is again a key, and so on. Follow the thread until you reach a value that is not a key of the "
    'object, and give that final value. Key: "{key}"\n Final value: '
)


def _sweep(index: int, n: int) -> float:
    return index / (n - 1) if n > 1 else 0.5


def generate(n: int, length: int, seed: int, profile: str = "cli") -> list[dict[str, Any]]:
    check_args(n, length, profile)
    if profile == "paper":
        return [
            fit_tokens(
                lambda chars, i=index: _row(i, n, length, seed, chars, profile),
                lambda row: f"{row['context']}\n{row['question']}",
                length,
            )
            for index in range(n)
        ]
    return [_row(index, n, length, seed, char_budget(length), profile) for index in range(n)]


def _row(index: int, n: int, length: int, seed: int, chars: int, profile: str) -> dict[str, Any]:
    r = rng(TASK, seed, length, index)
    variant = VARIANTS[index % len(VARIANTS)]
    count = max(10, (chars - 600) // PAIR_CHARS)  # 600: room for the question
    pairs = [[random_uuid(r), random_uuid(r)] for _ in range(count)]
    meta: dict[str, Any] = {"variant": variant, "num_kv_pairs": count, "scorer": "starts_with"}
    if variant == "single_needle":
        position = round(_sweep(index // len(VARIANTS), -(-n // len(VARIANTS))) * (count - 1))
        key, value = pairs[position]
        question, answer = SINGLE.format(key=key), [value]
        meta["needle_depth_percent"] = round(100 * position / max(count - 1, 1))
    elif variant == "multiple_needles":
        positions = r.sample(range(count), 2 + (index // len(VARIANTS)) % 4)
        keys = [pairs[p][0] for p in positions]
        question = MULTIPLE.format(keys=json.dumps(keys))
        answer = [pairs[p][1] for p in positions]
        meta["scorer"] = "fraction_found"
    else:
        hops = THREAD_HOPS[(index // len(VARIANTS)) % len(THREAD_HOPS)]
        positions = sorted(r.sample(range(count), hops), reverse=variant == "thread_backward")
        chain = [random_uuid(r) for _ in range(hops + 1)]
        for hop, position in enumerate(positions):
            pairs[position] = [chain[hop], chain[hop + 1]]
        question, answer = THREAD.format(key=chain[0]), [chain[-1]]
        meta.update(hops=hops, direction=variant.split("_")[1])
    context = json.dumps(dict(pairs))
    return make_row(TASK, index, seed, length, context, question, answer, meta, profile)


_LABEL = re.compile(r"^\s*(?:[a-z ]*value|answer)\s*:\s*", re.IGNORECASE)


def score(output: str, row: dict[str, Any]) -> float:
    gold = [str(a).lower() for a in row["answer"]]
    if row["meta"].get("scorer") == "fraction_found":
        found = output.lower()
        return sum(1.0 for g in gold if g in found) / len(gold)
    text = _LABEL.sub("", output.strip()).lstrip("\"'`[ \n").lower()
    return 1.0 if text.startswith(gold[0]) else 0.0
