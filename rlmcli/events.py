"""Typed events: what the loop, the model client and the sandbox report. The core never prints;
subscribers (the live view on stderr, the JSONL trace, the run history) consume these.

Every event has an `id`, a `parent` (the enclosing scope: run -> iteration -> cell -> sub-call)
and a wall-clock `ts`. Events round-trip through JSON (`to_dict` / `from_dict`), which is how a
trace is written and replayed. Long texts are capped where the event is made (`cap`), so a trace
stays small whatever the input size; the context itself is never in an event, only its digest.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

# Every event class has a docstring: a dataclass without one gets one made with inspect.signature
# at import, a cost paid before a run's first request (so is the code of its methods: see Event).
TEXT_CAP = 20_000  # characters of a prompt, reply, code or output kept in an event
SUB_TEXT_CAP = 2_000  # for sub-call prompts and replies, which can number in the thousands
_ids = itertools.count(1)
_prefix = f"{os.getpid():x}"


def new_id() -> str:
    return f"{_prefix}-{next(_ids)}"


def new_run_id() -> str:
    """Unique across runs and sortable by time, e.g. 20261122-112233-3fa9c1."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def cap(text: str | None, limit: int = TEXT_CAP) -> str | None:
    """`text` cut to `limit` characters, saying how much was dropped."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit:,} more characters not kept]"


@dataclass(repr=False, eq=False)
class Event:
    """The fields every event has (see the module's docstring)."""

    id: str = field(default_factory=new_id, kw_only=True)
    parent: str | None = field(default=None, kw_only=True)
    ts: float = field(default_factory=time.time, kw_only=True)
    # Depth in the tree of a recursive run: 0 the root run, 1 its rlm_query children, ... (kept
    # out of the trace at 0, so that a run without children is recorded as before).
    depth: int = field(default=0, kw_only=True)

    # One __repr__ and __eq__ for all events, the ones @dataclass would write for each class (hence
    # repr=False, eq=False on every event class): each generated method is compiled at import, ~8 ms
    # in all before a run's first request, for methods only tests and debugging call.
    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        compared = [f.name for f in fields(self) if f.compare]
        return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

    @property
    def name(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict:
        """The event as JSON-ready data: what `dataclasses.asdict` gives (containers copied), made
        without its recursion into the text and number fields, which are most of them: the trace
        writes several events between two model calls (issue 16, the gap between iterations)."""
        data = {"event": type(self).__name__}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            data[name] = value if type(value) in _PLAIN else copy.deepcopy(value)
        if not data["depth"]:
            del data["depth"]
        return data


_PLAIN = frozenset({str, int, float, bool, type(None)})  # immutable: to_dict need not copy them


@functools.cache
def _field_names(cls: type[Event]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(repr=False, eq=False)
class RunStarted(Event):
    """`id` of this event is the run id: every other event of the run descends from it."""

    question: str
    model: str
    sub_model: str
    sandbox: str
    inputs: list[str] = field(default_factory=list)
    cwd: str = ""
    version: str = ""
    parent_run: str | None = None  # the run this one follows up (`rlm ask -c`): a chain in `rlm logs`
    # Which servers answer (model/cache.py's endpoint_identity: no credentials, no query), so that
    # `rlm replay --rerun` finds the run's calls in the cache; "" is the provider's own endpoint.
    endpoint: str = ""
    sub_endpoint: str = ""


@dataclass(repr=False, eq=False)
class ContextLoaded(Event):
    """The run's input, loaded: its size and sources (digests, never contents)."""

    summary: str
    kind: str = ""
    chars: int = 0
    bytes: int = 0
    files: int = 0
    est_tokens: int = 0
    # (path, bytes, sha256) of the first files, never their contents
    sources: list[list] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)


@dataclass(repr=False, eq=False)
class SandboxChosen(Event):
    """The sandbox the run got ("docker", "local", "process"): RunStarted names the one asked
    for, which may be "auto"; the history keeps this one."""

    sandbox: str


@dataclass(repr=False, eq=False)
class Notice(Event):
    """Something the user should know that is not an error (a fallback, a pull in progress)."""

    message: str
    warning: bool = False


@dataclass(repr=False, eq=False)
class IterationStarted(Event):
    """A turn of the loop begins: one root call, then its cells."""

    iteration: int


@dataclass(repr=False, eq=False)
class ModelCall(Event):
    """A model call ended with a reply: its usage, cost and (capped) texts."""

    role: str  # "root" | "sub"
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: the model has no known price
    latency_s: float
    prompt: str | None = None  # root: the newest message only; sub: the prompt (both capped)
    reply: str | None = None  # capped
    cached: bool = False  # served by the cache of model calls: its tokens and cost were not paid again


@dataclass(repr=False, eq=False)
class CellStarted(Event):
    """A code cell of a root reply starts in the REPL."""

    iteration: int
    code: str


@dataclass(repr=False, eq=False)
class CellFinished(Event):
    """A code cell ended: its (capped) output and error."""

    iteration: int
    output: str  # capped; the model saw at most --max-output-chars of it anyway
    error: str | None
    duration_s: float


@dataclass(repr=False, eq=False)
class SubcallProgress(Event):
    """A batch of sub-calls: emitted when it starts and as each call finishes (done == total at
    the end). Renderers throttle what they show."""

    total: int
    done: int
    failed: int
    in_flight: int
    batch: str = ""  # the id of the batch's first progress event ("" on that first event itself)
    retried: int = 0  # calls that needed more than one attempt so far (ended or not; `failed` apart)


@dataclass(repr=False, eq=False)
class ModelRetry(Event):
    """A model call's attempt failed and the call is tried again after `wait_s` (model/retry.py)."""

    role: str  # "root" | "sub"
    model: str
    attempt: int  # the attempt that failed: 1 is the first
    reason: str  # one line, e.g. "429 Too Many Requests" or "nothing received for 120 s"
    wait_s: float


@dataclass(repr=False, eq=False)
class RunStopped(Event):
    """The run ends without an answer: a limit, an error, an interruption. RunFinished follows."""

    reason: str  # an errors.ExitReason value: "max_cost", "provider_error", "interrupted", ...
    message: str
    hint: str | None = None  # what the user can do about it


@dataclass(repr=False, eq=False)
class HistoryCompacted(Event):
    """The root history neared the root model's window: older cell outputs were cut (compact.py)
    before the next root call."""

    before_tokens: int  # the history's estimated size before the cut...
    after_tokens: int  # ...and after it
    messages: int  # user messages cut
    chars_dropped: int
    window_tokens: int  # the root model's window that was neared


@dataclass(repr=False, eq=False)
class ChildStarted(Event):
    """A child RLM (rlm_query) starts under the cell that called it; its own events descend from
    this one (its `id` is the child's run id) and carry its depth."""

    query: str  # capped
    context_chars: int  # of the child's `context`
    whole_input: bool = False  # its context is the parent's whole input (no copy)


@dataclass(repr=False, eq=False)
class ChildFinished(Event):
    """A child RLM ended; `parent` is its ChildStarted. Usage counts its calls and its children's."""

    exit_reason: str  # an errors.ExitReason value, or "error" when the child could not run
    answer: str | None  # capped; what the parent cell got back
    iterations: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    message: str | None = None  # why it stopped early


@dataclass(repr=False, eq=False)
class FinalAnswer(Event):
    """The answer the run ends with."""

    answer: str


@dataclass(repr=False, eq=False)
class Sources(Event):
    """The evidence of the answer (--cite): its citations, each with the lines the host cut from
    the input, and what it claims that the input does not bear out (cite/check.py)."""

    citations: list[dict] = field(default_factory=list)  # cite.Citation.to_dict()
    unverified: list[dict] = field(default_factory=list)  # cite.Unverified.to_dict()
    notes: list[str] = field(default_factory=list)  # quotes found only with whitespace normalised


@dataclass(repr=False, eq=False)
class RunFinished(Event):
    """The last event of a run: how it ended and what it used."""

    exit_reason: str  # an errors.ExitReason value: "final", "max_cost", "interrupted", "provider_error", ...
    answer: str | None
    partial: bool = False
    iterations: int = 0
    subcalls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_known: bool = True
    elapsed_s: float = 0.0
    cache_hits: int = 0  # calls the cache of model calls served (not in the totals above)
    cache_misses: int = 0
    cache_saved_tokens: int = 0
    cache_saved_cost_usd: float = 0.0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunStarted, ContextLoaded, SandboxChosen, Notice, IterationStarted, ModelCall, CellStarted,
        CellFinished, SubcallProgress, ModelRetry, HistoryCompacted, RunStopped, FinalAnswer, Sources,
        RunFinished, ChildStarted, ChildFinished,
    )
}  # fmt: skip

# Events of older traces that are read as a newer one: name -> (new name, {old key: new key}).
RENAMED: dict[str, tuple[str, dict[str, str]]] = {
    "LimitReached": ("RunStopped", {"limit": "reason"}),
    "ErrorEvent": ("RunStopped", {"kind": "reason"}),
}


def from_dict(data: dict) -> Event:
    """The event a trace line describes; unknown keys (from newer versions) are ignored, and events
    of older versions are read under their new names (RENAMED)."""
    if data["event"] in RENAMED:
        name, keys = RENAMED[data["event"]]
        data = {keys.get(k, k): v for k, v in data.items()} | {"event": name}
    cls = EVENT_TYPES[data["event"]]
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


Emit = Callable[[Event], None]


def discard(event: Event) -> None:
    """An Emit that drops everything (library use, tests)."""


def broadcast(subscribers: Iterable[Emit]) -> Emit:
    """One Emit that hands every event to each subscriber in turn."""
    targets = list(subscribers)

    def emit(event: Event) -> None:
        for target in targets:
            target(event)

    return emit
