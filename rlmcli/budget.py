"""Usage accounting and hard limits, checked before every model call is dispatched.

Every attempt at a call reserves its estimated size (tokens, cost) right before it is sent and holds
the reservation while in flight; the check counts what was spent, what is reserved and the new
attempt's estimate, and refuses one that would cross a limit. A retry is checked again like a new
call. A failed attempt the provider may have billed (a timeout, a 5xx, a connection cut after the
request went out) is counted at its prompt's estimate, marked estimated.

How far a run can go past --max-tokens/--max-cost: an estimate is the prompt's tokens (tokens.py,
o200k_base) plus the largest completion seen so far from that model (root and sub-calls apart). The
first call of a model, whose completion cannot be estimated yet, runs alone until a non-empty
completion was seen (see ModelClient._first_call). So a run overshoots by at most that one call's
completion, as long as no reply is longer than the largest one before it and the provider counts
no more prompt tokens than estimated. Otherwise every call in flight (up to --concurrency) can
overshoot by its difference from the estimate: a completion longer than any before it is not
bounded in advance.

A child RLM (rlm_query) reserves a share of what is left before it starts (open_share), and its
calls are admitted against that share (shares.py), so parallel children cannot each spend the whole
remainder; every call is counted in `usage` and, by tree depth, in `by_depth`.

Provider usage is validated before it is counted: a missing, negative or absurd count is replaced
by an estimate from the text, and the run's usage is marked estimated.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from . import shares, tokens
from .errors import LimitReached

# Characters per token where there is no text to count, only a size in tokens to turn into
# characters (bench/ and windows.py size texts with it). Prose and code run at ~4 in o200k_base;
# logs at ~2.5 (loghub: 2.2-3.0), so a figure from it errs large there.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators that chat templates add per message
MAX_TOKENS_PER_CALL = 10_000_000  # no model reads or writes more in one call: a larger count is bogus
# A reported prompt size may exceed the estimate (another tokenizer, templates), but not by this much.
PROMPT_ESTIMATE_FACTOR = 100
PROMPT_ESTIMATE_SLACK = 1000


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the program's one counter (tokens.count_text: exact up to 1 MiB of text,
    sampled above). Run before every model call: a 100 KB prompt costs 10-17 ms on one core (prose and
    code 10 ms, log text 17 ms; measured with tiktoken 0.14), a 1 MB one ~0.15 s, against seconds
    for the call itself. Worth it: characters / 4 was 34% low on logs, and limits let runs
    overshoot by as much. The root history is counted again before every turn (the reservation,
    the window): each text's count is remembered, so only the newest messages cost anything."""
    key = (len(text), hash(text))  # a str caches its hash: a second lookup costs nothing
    count = _memo.get(key)
    if count is None:
        count = tokens.count_text(text).tokens
        if len(_memo) >= MEMO_ENTRIES:
            _memo.pop(next(iter(_memo)))  # the oldest first
        _memo[key] = count
    return count


# Counts of texts, by (length, hash): an estimate may share a count with a colliding text. Short
# ones too: uncounted, a history of N short messages (replies of one small block) cost N tokenizer
# calls (~5-15 us each) per count, 0.25 ms a turn at 25 iterations, 2 ms at 150 (cProfile of the
# run benchmarks/iteration_gap.py makes).
MEMO_ENTRIES = 4096
_memo: dict[tuple[int, int], int] = {}


def tokens_in_chars(chars: int) -> int:
    """A size in tokens for `chars` characters when the text is not at hand: characters /
    CHARS_PER_TOKEN, rounded up. Count the text (estimate_tokens) whenever you have it."""
    return -(-chars // CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: list[dict]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def prompt_tokens_at_most(messages: list[dict]) -> int:
    """A bound on estimate_prompt_tokens(messages) that needs no tokenizer: a text's UTF-8 bytes (no
    o200k token is shorter than a byte; a sampled count, above tokens.EXACT_CHARS, stays under 4 a
    character). For the first request, sent before the tokenizer has loaded (model/client.py). It
    errs high ~4x: first prompts ran at 3.7-4.4 bytes a token (measured with o200k on rlm's system
    prompt and first message over prose, a log, digits, CJK and base64 inputs). A statistical rule
    (bytes / 3) would err high by 25-45% on those, but a question of dense text can make it low, and
    this bound is only used where erring high is harmless (ModelClient._prompt_estimate)."""
    total = 0
    for m in messages:
        text = str(m.get("content") or "")
        if text.isascii():  # no time: CPython marks such strings; one byte a character
            size = len(text)
        else:
            size = (
                4 * len(text)
                if len(text) > tokens.EXACT_CHARS
                else len(text.encode("utf-8", "surrogatepass"))
            )
        total += size + MESSAGE_OVERHEAD_TOKENS
    return total


def token_count(value: object) -> int | None:
    """A token count as a provider should report it (a whole number in range), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_TOKENS_PER_CALL:
        return value
    return None


def checked_usage(
    prompt: object, completion: object, prompt_estimate: int, text: str
) -> tuple[int, int, bool]:
    """(prompt_tokens, completion_tokens, estimated) from a provider's raw usage numbers.

    A count that is missing, not a whole number, negative, NaN, over MAX_TOKENS_PER_CALL, zero for
    a non-empty prompt or reply, or (for the prompt) 100 times above or below the estimate is
    replaced by the estimate, and `estimated` is True. Completions are not compared with their text: reasoning
    models are billed for tokens the reply does not show.
    """
    prompt_tokens = token_count(prompt)
    if prompt_tokens is not None and (
        (prompt_tokens == 0 and prompt_estimate > 0)
        or prompt_tokens > PROMPT_ESTIMATE_FACTOR * prompt_estimate + PROMPT_ESTIMATE_SLACK
        or prompt_tokens * PROMPT_ESTIMATE_FACTOR + PROMPT_ESTIMATE_SLACK < prompt_estimate
    ):
        prompt_tokens = None
    completion_tokens = token_count(completion)
    if completion_tokens == 0 and text:
        completion_tokens = None
    estimated = prompt_tokens is None or completion_tokens is None
    return (
        prompt_estimate if prompt_tokens is None else prompt_tokens,
        estimate_tokens(text) if completion_tokens is None else completion_tokens,
        estimated,
    )


def valid_cost(cost: object) -> float | None:
    """A cost in USD that can be counted: finite and not negative."""
    if isinstance(cost, int | float) and not isinstance(cost, bool) and math.isfinite(cost) and cost >= 0:
        return float(cost)
    return None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True  # False once any call was made with a model that has no price
    estimated: bool = False  # True once any call's usage was estimated (the provider's was missing or bogus)
    root_calls: int = 0
    subcalls: int = 0
    # Calls served by the cache of model calls (model/cache.py): free, so out of every total above.
    cache_hits: int = 0
    cache_misses: int = 0  # calls made while the cache was on
    saved_tokens: int = 0
    saved_cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Limits:
    max_iterations: int = 30
    max_subcalls: int | None = None
    max_cost: float | None = None  # USD
    max_tokens: int | None = None
    timeout: float | None = None  # wall seconds for the whole run

    @property
    def limits_spending(self) -> bool:
        """Whether calls must be estimated before dispatch (a cost or token limit is set)."""
        return self.max_cost is not None or self.max_tokens is not None


@dataclass
class Reservation:
    """What one call in flight holds of the budget until it is settled."""

    tokens: int
    cost: float
    settled: bool = False
    share: shares.Share | None = None  # a child's call: held in its share (shares.py), not here


@dataclass
class Budget:
    """Shared by the root loop and every sub-call; the single place limits are enforced.

    `reserve()` runs right before each dispatch and `settle()` when the call ends. Once breached,
    the budget stays breached: later checks fail fast with the same reason.
    """

    limits: Limits = field(default_factory=Limits)
    usage: Usage = field(default_factory=Usage)
    started: float = field(default_factory=time.monotonic)
    iterations: int = 0
    breached: LimitReached | None = None
    reserved_tokens: int = 0
    reserved_cost: float = 0.0
    # The largest completion seen per (kind, model): the estimate for the next call's completion.
    largest_completion: dict[tuple[str, str], int] = field(default_factory=dict)
    # Usage by depth of the tree (0: the root run; 1: its rlm_query children, ...), `usage` split.
    by_depth: dict[int, Usage] = field(default_factory=dict)

    def restart_clock(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining_time(self) -> float | None:
        if self.limits.timeout is None:
            return None
        return max(0.0, self.limits.timeout - self.elapsed())

    def deadline(self) -> float | None:
        """When the run's wall time (--timeout) ends, on the time.monotonic() clock; None: never."""
        return None if self.limits.timeout is None else self.started + self.limits.timeout

    def check(self, subcall: bool = False) -> None:
        """Raise LimitReached if another model call may not be dispatched."""
        if self.breached is None:
            self.breached = self._breach(subcall)
        if self.breached is not None:
            raise self.breached

    def check_clock(self) -> None:
        """Raise LimitReached once the run's wall time is up (e.g. between retries of one call)."""
        lim = self.limits
        if self.breached is None and lim.timeout is not None and self.elapsed() >= lim.timeout:
            self.breached = LimitReached("timeout", f"wall-time limit of {lim.timeout:g}s reached")
        if self.breached is not None:
            raise self.breached

    def check_batch(self, size: int) -> None:
        """Refuse, as a whole and before any of it starts, a batch larger than the sub-calls left."""
        self.check(subcall=True)
        limit = self.limits.max_subcalls
        if limit is not None and self.usage.subcalls + size > limit:
            left = limit - self.usage.subcalls
            self.breached = LimitReached(
                "subcalls",
                f"sub-call limit of {limit} reached: a batch of {size:,} prompts was refused "
                f"({left} sub-call{'s' if left != 1 else ''} left)",
            )
            raise self.breached

    def _breach(self, subcall: bool) -> LimitReached | None:
        lim, use = self.limits, self.usage
        if lim.timeout is not None and self.elapsed() >= lim.timeout:
            return LimitReached("timeout", f"wall-time limit of {lim.timeout:g}s reached")
        if lim.max_cost is not None and use.cost_usd >= lim.max_cost:
            return LimitReached(
                "cost", f"cost limit of ${lim.max_cost:g} reached (${use.cost_usd:.4f} spent)"
            )
        if lim.max_tokens is not None and use.total_tokens >= lim.max_tokens:
            return LimitReached(
                "tokens", f"token limit of {lim.max_tokens} reached ({use.total_tokens} used)"
            )
        if subcall and lim.max_subcalls is not None and use.subcalls >= lim.max_subcalls:
            return LimitReached("subcalls", f"sub-call limit of {lim.max_subcalls} reached")
        return None

    def reserve(self, tokens: int, cost: float | None, subcall: bool, retry: bool = False) -> Reservation:
        """Admit one attempt estimated at `tokens` and `cost` (None: no known price), or raise.

        The attempt is refused when what was spent, plus what calls in flight reserved, plus this
        estimate would cross --max-tokens or --max-cost. Admitted, it holds its estimate until
        `settle()`, and a first attempt counts as a dispatched call; a `retry` is checked the same
        way but is not another call (nor checked against --max-subcalls: its call already was).
        No await may come between this and the dispatch.
        """
        self.check(subcall and not retry)
        share = shares.current.get()
        if share is not None:  # a child's call: its share was held here when the child started
            share.admit(tokens, cost or 0.0)
            if not retry:
                self.count_dispatch(subcall)
            return Reservation(tokens, cost or 0.0, share=share)
        lim, use = self.limits, self.usage
        if lim.max_tokens is not None and use.total_tokens + self.reserved_tokens + tokens > lim.max_tokens:
            self.breached = LimitReached(
                "tokens",
                f"token limit of {lim.max_tokens} reached: the next call needs ~{tokens:,} tokens "
                f"({use.total_tokens:,} used, {self.reserved_tokens:,} in flight)",
            )
            raise self.breached
        cost = cost or 0.0
        if lim.max_cost is not None and use.cost_usd + self.reserved_cost + cost > lim.max_cost:
            self.breached = LimitReached(
                "cost",
                f"cost limit of ${lim.max_cost:g} reached: the next call would cost ~${cost:.4f} "
                f"(${use.cost_usd:.4f} spent, ${self.reserved_cost:.4f} in flight)",
            )
            raise self.breached
        if not retry:
            self.count_dispatch(subcall)
        self.reserved_tokens += tokens
        self.reserved_cost += cost
        return Reservation(tokens, cost)

    def settle(self, reservation: Reservation) -> None:
        """Release a call's reservation (it finished, or failed); safe to call twice."""
        if not reservation.settled:
            reservation.settled = True
            if reservation.share is not None:
                reservation.share.release(reservation.tokens, reservation.cost)
                return
            self.reserved_tokens -= reservation.tokens
            self.reserved_cost = max(0.0, self.reserved_cost - reservation.cost)

    def record(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float | None,
        subcall: bool,
        estimated: bool = False,
    ) -> None:
        """Count a finished call. `cost=None` means the model has no known price."""
        self.usage.prompt_tokens += max(0, prompt_tokens)
        self.usage.completion_tokens += max(0, completion_tokens)
        self.usage.estimated = self.usage.estimated or estimated
        counted = valid_cost(cost)
        if counted is None:
            self.usage.cost_known = False
        else:
            self.usage.cost_usd += counted
        self._record_in_shares(max(0, prompt_tokens) + max(0, completion_tokens), counted or 0.0)
        level = self.depth_usage()
        level.prompt_tokens += max(0, prompt_tokens)
        level.completion_tokens += max(0, completion_tokens)
        level.estimated = level.estimated or estimated
        level.cost_known = level.cost_known and counted is not None
        level.cost_usd += counted or 0.0

    def note_completion(self, kind: str, model: str, completion_tokens: int) -> None:
        # An empty completion is no estimate: were 0 kept, the calls behind it would reserve no
        # completion at all (and run together, see ModelClient._first_call).
        if completion_tokens > 0:
            key = (kind, model)
            self.largest_completion[key] = max(self.largest_completion.get(key, 0), completion_tokens)

    def completion_estimate(self, kind: str, model: str) -> int | None:
        """The largest completion of this kind and model so far; None before a non-empty one."""
        return self.largest_completion.get((kind, model))

    def count_dispatch(self, subcall: bool) -> None:
        """Count a call as dispatched (sub-call limits count dispatches, not completions)."""
        for usage in (self.usage, self.depth_usage()):
            if subcall:
                usage.subcalls += 1
            else:
                usage.root_calls += 1

    # -- children's shares (shares.py) -----------------------------------------------------------

    def depth_usage(self) -> Usage:
        """The usage of the tree level the running task belongs to (see shares.current)."""
        share = shares.current.get()
        depth = 0 if share is None else share.depth
        return self.by_depth.setdefault(depth, Usage())

    def open_share(self, depth: int, parts: int) -> shares.Share:
        """Reserve a child's share: 1/`parts` of what is left (of the parent child's share, for a
        grandchild) under each spending limit, held until close_share(). LimitReached, with the
        budget not breached, when nothing is left to give: the child is refused, the run goes on."""
        self.check()
        parent = shares.current.get()
        lim, use = self.limits, self.usage
        if parent is None:
            left_tokens = (
                None if lim.max_tokens is None else lim.max_tokens - use.total_tokens - self.reserved_tokens
            )
            left_cost = None if lim.max_cost is None else lim.max_cost - use.cost_usd - self.reserved_cost
        else:
            left_tokens, left_cost = parent.left()
        if (left_tokens is not None and left_tokens <= 0) or (left_cost is not None and left_cost <= 0):
            raise LimitReached("cost" if left_cost is not None and left_cost <= 0 else "tokens",
                               "no budget is left for another child")  # fmt: skip
        share = shares.Share(
            depth,
            None if left_tokens is None else left_tokens // parts,
            None if left_cost is None else left_cost / parts,
            parent=parent,
        )
        self._hold(parent, *share.unspent())
        return share

    def close_share(self, share: shares.Share) -> None:
        """Release what a finished child did not spend of its share."""
        tokens, cost = share.unspent()
        self._hold(share.parent, -tokens, -cost)
        share.tokens, share.cost = share.spent_tokens, share.spent_cost  # nothing is held any more

    def _hold(self, pool: shares.Share | None, tokens: int, cost: float) -> None:
        if pool is None:
            self.reserved_tokens += tokens
            self.reserved_cost = max(0.0, self.reserved_cost + cost)
        else:
            pool.held_tokens += tokens
            pool.held_cost = max(0.0, pool.held_cost + cost)

    def _record_in_shares(self, tokens: int, cost: float) -> None:
        """A child's spending: counted in its share and each share above it, whose holds in their
        parents' pools shrink by as much (it is usage now, no longer a reservation)."""
        share = shares.current.get()
        while share is not None:
            before = share.unspent()
            share.spent_tokens += tokens
            share.spent_cost += cost
            after = share.unspent()
            self._hold(share.parent, after[0] - before[0], after[1] - before[1])
            share = share.parent
