"""Settings and their precedence: flags > RLM_* environment variables > config file > defaults.

Flags and environment variables are both resolved by the CLI (Typer's `envvar=`), so they reach
`resolve()` as explicit values; anything left as None falls back to the config file, then to the
defaults below. Every value is checked before any input is read: a config value of the wrong type
names its key and file, a number out of range or a bad size its flag (exit 2). A `Settings` is
valid once made: sizes are parsed to bytes there, once.

The configs derived from the settings are each built in one place: `limits()` (the run's budget)
and `load_options()` (the walker) here; the sandbox's limits and Docker options in
repl/backends.py; the model configs in run.make_client. Nothing else assembles them by hand.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, UsageError

if TYPE_CHECKING:
    from .budget import Limits
    from .walk import LoadOptions

SANDBOXES = ("auto", "docker", "local", "process")  # local: bubblewrap; process: a plain child
CITE_MODES = ("off", "check", "require")  # --cite (rlmcli/cite/check.py)
DEFAULT_CONCURRENCY = 64  # sub-calls in flight at once when neither --concurrency nor a server says


@dataclass
class Settings:
    model: str = "openai/gpt-5-mini"
    sub_model: str | None = None  # default: the root model
    api_base: str | None = None
    sub_api_base: str | None = None  # default: api_base, for a sub model of the root's provider (run.py)
    allow_models: list[str] = field(default_factory=list)  # more models llm_query(model=...) may name
    concurrency: int | None = None  # None: DEFAULT_CONCURRENCY, or a probed server's slots (run.py)
    request_timeout: float | None = None  # None: by the server (model/timeouts.py: 120 s, 600 s local)
    max_retries: int = 4
    max_iterations: int = 30
    max_subcalls: int | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    sandbox: str = "auto"
    image: str = "python:3.12-slim"
    cpus: float = 1.0
    pids_limit: int = 128
    # As written (e.g. in messages); `memory_bytes` is what the sandbox gets: for "auto", 0 here, and the
    # run sizes it from the loaded context (run.sandbox_memory: characters x width, at least 1g).
    memory: str = "auto"
    cell_timeout: float = 120.0
    max_output_chars: int = 20000
    max_file_size: str = "10M"  # as written; `max_file_size_bytes` is what the walker uses
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    no_ignore: bool = False
    hidden: bool = False
    redact_secrets: bool = False  # replace possible secrets in the input before the sandbox (secrets_scan.py)
    no_subcalls: bool = False  # the paper's ablation: the REPL without llm_query
    no_log: bool = False  # keep no record in the history (--no-log, or `no-log = true` in the config)
    instructions: str | None = None  # appended to the root model's system prompt (--instructions)
    schema: str | None = None  # --schema: a JSON Schema file, or the schema as inline JSON
    root_window: int | None = None  # the root model's window in tokens (default: litellm's table)
    sub_window: int | None = None  # the sub model's window in tokens (default: litellm's table)
    max_reply_tokens: int | None = None  # max_tokens of root calls (None: providers.DEFAULT_MAX_REPLY_TOKENS)
    max_sub_reply_tokens: int | None = None  # max_tokens of sub-calls (None: the default, likewise)
    price: str | None = None  # --price IN,OUT: USD per million tokens of a model no table prices
    cite: str = "check"  # evidence for answers: off | check | require (rlmcli/cite/)
    confirm_tokens: int = 2_000_000  # a larger input asks before the run on a terminal (0: never ask)
    max_depth: int = 1  # 1: rlm_query is an llm_query; 2+: child RLMs (rlmcli/recursion.py)
    max_children: int = 4  # child RLMs of one rlm_query_batched running at once
    child_iterations: int = 10  # a child RLM's root-model turns
    no_cache: bool = False  # --no-cache: neither read nor write the cache of model calls
    cache_only: bool = False  # --cache-only: offline, every reply from the cache (a miss is exit 4)
    cache_size: str = "1G"  # the cache's size cap (`cache-size` in the config); LRU entries go past it
    # Parsed from the sizes above when the Settings is made (and again by dataclasses.replace).
    memory_bytes: int = field(init=False, repr=False, compare=False)
    max_file_size_bytes: int = field(init=False, repr=False, compare=False)
    cache_size_bytes: int = field(init=False, repr=False, compare=False)
    price_per_token: tuple[float, float] | None = field(init=False, repr=False, compare=False)
    # `schema`, read and checked: a schema.Schema or None (Any: HINTS evaluates these annotations)
    answer_schema: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Check every value; a bad one is exit 2 naming its flag (config values were checked,
        naming their file, by load_config)."""
        if self.sandbox not in SANDBOXES:
            choices = ", ".join(SANDBOXES)
            raise UsageError(f"unknown sandbox {self.sandbox!r}", hint=f"choose one of: {choices}")
        if self.cite not in CITE_MODES:
            raise UsageError(f"unknown --cite mode {self.cite!r}", hint="choose one of: off, check, require")
        for name in RANGES:
            problem = _out_of_range(name, getattr(self, name))
            if problem:
                raise UsageError(f"{_flag(name)} {problem}, not {getattr(self, name)!r}")
        for name in SIZES:
            problem = _size_problem(name, getattr(self, name))
            if problem:
                raise UsageError(f"{_flag(name)} {problem}, not {getattr(self, name)!r}", hint=SIZE_HINT)
        self.memory_bytes = 0 if self.memory == AUTO_MEMORY else parse_size(self.memory)
        self.max_file_size_bytes = parse_size(self.max_file_size)
        self.cache_size_bytes = parse_size(self.cache_size)
        self.price_per_token = None if self.price is None else parse_price(self.price)
        if self.no_cache and self.cache_only:
            raise UsageError("--no-cache and --cache-only contradict each other", hint="give one of them")
        self.answer_schema = None
        if self.schema is not None:  # read now: a bad schema is exit 2 before any input or request
            from .schema import load  # jsonschema only when asked for

            self.answer_schema = load(self.schema)

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.model

    def limits(self) -> Limits:
        """The run's budget limits."""
        from .budget import Limits  # not at import time: `rlm --help` loads this module

        return Limits(
            max_iterations=self.max_iterations,
            max_subcalls=self.max_subcalls,
            max_cost=self.max_cost,
            max_tokens=self.max_tokens,
            timeout=self.timeout,
        )

    def load_options(self) -> LoadOptions:
        """What the walker loads from directories."""
        from .walk import LoadOptions

        return LoadOptions(
            include=list(self.include),
            exclude=list(self.exclude),
            no_ignore=self.no_ignore,
            hidden=self.hidden,
            max_file_size=self.max_file_size_bytes,
            redact_secrets=self.redact_secrets,
        )


# The smallest value each number may take, and whether it may equal it ("> 0" or ">= 1"). A zero
# timeout would turn the host's backstop off (a half-written frame then hangs the host), a negative
# one kill every cell, and NaN makes every comparison false: a limit that never trips.
RANGES: dict[str, tuple[str, float]] = {
    "concurrency": (">=", 1),
    "request_timeout": (">", 0),
    "max_retries": (">=", 0),
    "max_iterations": (">=", 1),
    "max_subcalls": (">=", 0),  # 0: the run may not make a sub-call
    "max_cost": (">=", 0),
    "max_tokens": (">=", 1),
    "timeout": (">", 0),
    "cpus": (">", 0),
    "pids_limit": (">=", 1),
    "cell_timeout": (">", 0),
    "max_output_chars": (">=", 1),
    "max_depth": (">=", 1),
    "max_children": (">=", 1),
    "child_iterations": (">=", 1),
    # A window must hold the system prompt (~2K tokens) and a reply: smaller ones are typos.
    "root_window": (">=", 4096),
    "sub_window": (">=", 1024),
    "max_reply_tokens": (">=", 16),
    "max_sub_reply_tokens": (">=", 16),
    "confirm_tokens": (">=", 0),
}
# Text such as "512m" or "2g" (a whole number of bytes in TOML too).
SIZES = ("memory", "max_file_size", "cache_size")
AUTO_MEMORY = "auto"  # --memory's default: what the context needs (run.sandbox_memory), at least 1g
SIZE_HINT = "use bytes or a K/M/G suffix, e.g. 500K or 10M"
TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
# What a config file may set: field name -> declared type, e.g. int | None (not the parsed sizes).
# get_type_hints once: per field it was 43 evaluations of every annotation, ~60 ms of each start.
_hints = typing.get_type_hints(Settings)
HINTS: dict[str, Any] = {f.name: _hints[f.name] for f in fields(Settings) if f.init}


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """'10M', '500k', '1G', '1.5MB', '1024' -> bytes (binary units: 1K = 1024)."""
    match = _SIZE_RE.match(str(text))  # tolerate an int
    if not match:
        raise InputError(f"invalid size: {text!r}", hint=SIZE_HINT)
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


def parse_price(text: str) -> tuple[float, float]:
    """'0.15,0.60' (USD per million prompt and completion tokens) -> USD per token."""
    parts = str(text).split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise UsageError(
            f"--price must be two numbers >= 0, not {text!r}",
            hint="USD per million prompt and completion tokens, e.g. --price 0.15,0.60 (0,0: free)",
        )
    return values[0] / 1e6, values[1] / 1e6


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _accepts(hint: Any, kind: type) -> bool:
    """Whether a declared type is `kind`, or `kind | None`."""
    return hint is kind or kind in typing.get_args(hint)


def config_path() -> Path:
    """`RLM_CONFIG`, else config.toml in the user config dir (e.g. ~/.config/rlm/config.toml)."""
    if os.environ.get("RLM_CONFIG"):
        return Path(os.environ["RLM_CONFIG"])
    from platformdirs import user_config_path

    return user_config_path("rlm") / "config.toml"


def load_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from exc
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        name = "allow_models" if name == "allow_model" else name  # the option is --allow-model
        if name not in HINTS:
            raise UsageError(f"unknown setting {key!r} in {path}", hint=f"known: {', '.join(sorted(HINTS))}")
        if name in SIZES and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # `memory = 1073741824`: bytes
        if not _has_type(value, HINTS[name]):
            raise UsageError(f"{key} in {path} must be {_type_name(HINTS[name])}, not {value!r}")
        problem = _out_of_range(name, value) or _size_problem(name, value)
        if problem:
            raise UsageError(f"{key} in {path} {problem}, not {value!r}")
        values[name] = float(value) if _accepts(HINTS[name], float) else value
    return values


def _has_type(value: object, hint: Any) -> bool:
    """Whether a config value fits a Settings field's declared type (TOML has no null)."""
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if hint is float:  # TOML writes 1 for 1.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return 'a list of strings, e.g. ["a", "b"]'
    return TYPE_NAMES.get(hint, str(hint))


def _out_of_range(name: str, value: Any) -> str | None:
    """What is wrong with a number (e.g. "must be a number > 0"), or None when it is fine."""
    if name not in RANGES or value is None:
        return None
    op, least = RANGES[name]
    kind = "a whole number" if _accepts(HINTS[name], int) else "a number"
    ok = math.isfinite(value) and (value > least if op == ">" else value >= least)
    return None if ok else f"must be {kind} {op} {least:g}"


def _size_problem(name: str, value: Any) -> str | None:
    """What is wrong with a size (e.g. "must be a size such as 512m or 2g"), or None."""
    if name not in SIZES or (name == "memory" and value == AUTO_MEMORY):
        return None
    try:
        size = parse_size(value)
    except InputError:
        return "must be a size such as 512m or 2g" + (", or auto" if name == "memory" else "")
    return "must be more than 0 bytes" if name == "memory" and size <= 0 else None


def resolve(explicit: dict[str, Any], config: dict[str, Any] | None = None) -> Settings:
    """Merge explicit values (flags/env; None or [] means unset) over the config over defaults,
    and check them all (see Settings.__post_init__)."""
    config = load_config(config_path()) if config is None else config
    merged = dict(config)
    merged.update({k: v for k, v in explicit.items() if v is not None and v != []})
    return Settings(**merged)
