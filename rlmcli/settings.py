"""Settings and their precedence: flags > RLM_* environment variables > config file > defaults.

Flags and environment variables are both resolved by the CLI (Typer's `envvar=`), so they reach
`resolve()` as explicit values; anything left as None falls back to the config file, then to the
defaults below. Every value is checked before any input is read: a config value of the wrong type
names its key and file, a number out of range its flag (exit 2).
"""

from __future__ import annotations

import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

SANDBOXES = ("auto", "docker", "local", "process")  # local: bubblewrap; process: a plain child


@dataclass
class Settings:
    model: str = "openai/gpt-5-mini"
    sub_model: str | None = None  # default: the root model
    api_base: str | None = None
    sub_api_base: str | None = None  # default: api_base, for a sub model of the root's provider (run.py)
    allow_models: list[str] = field(default_factory=list)  # more models llm_query(model=...) may name
    concurrency: int = 64
    request_timeout: float = 120.0
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
    memory: str = "1g"
    cell_timeout: float = 120.0
    max_output_chars: int = 20000
    max_file_size: str = "10M"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    no_ignore: bool = False
    hidden: bool = False
    no_subcalls: bool = False  # the paper's ablation: the REPL without llm_query

    @property
    def effective_sub_model(self) -> str:
        return self.sub_model or self.model


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
}
TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
HINTS: dict[str, Any] = typing.get_type_hints(Settings)  # field name -> declared type, e.g. int | None


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
        if not _has_type(value, HINTS[name]):
            raise UsageError(f"{key} in {path} must be {_type_name(HINTS[name])}, not {value!r}")
        problem = _out_of_range(name, value)
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


def resolve(explicit: dict[str, Any], config: dict[str, Any] | None = None) -> Settings:
    """Merge explicit values (flags/env; None or [] means unset) over the config over defaults."""
    config = load_config(config_path()) if config is None else config
    merged = dict(config)
    merged.update({k: v for k, v in explicit.items() if v is not None and v != []})
    settings = Settings(**merged)
    if settings.sandbox not in SANDBOXES:
        raise UsageError(
            f"unknown sandbox {settings.sandbox!r}", hint=f"choose one of: {', '.join(SANDBOXES)}"
        )
    for name in RANGES:
        problem = _out_of_range(name, getattr(settings, name))
        if problem:
            raise UsageError(f"--{name.replace('_', '-')} {problem}, not {getattr(settings, name)!r}")
    _check_sizes(settings)
    return settings


def _check_sizes(settings: Settings) -> None:
    from .context import parse_size  # not at import time: `rlm --help` loads this module

    if parse_size(settings.memory) <= 0:
        raise UsageError(f"--memory must be more than 0 bytes, not {settings.memory!r}")
    parse_size(settings.max_file_size)
