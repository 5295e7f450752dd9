"""Settings and their precedence: flags > RLM_* environment variables > config file > defaults.

Flags and environment variables are both resolved by the CLI (Typer's `envvar=`), so they reach
`resolve()` as explicit values; anything left as None falls back to the config file, then to the
defaults below.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

SANDBOXES = ("auto", "docker", "local", "process")  # local: bubblewrap; process: a plain child


@dataclass
class Settings:
    model: str = "openai/gpt-5-mini"
    sub_model: str | None = None  # default: the root model
    api_base: str | None = None
    sub_api_base: str | None = None  # default: api_base
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

    @property
    def effective_sub_api_base(self) -> str | None:
        return self.sub_api_base or self.api_base


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
    known = {f.name for f in fields(Settings)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise UsageError(f"unknown setting {key!r} in {path}", hint=f"known: {', '.join(sorted(known))}")
        values[name] = value
    return values


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
    for name in ("concurrency", "max_iterations", "max_output_chars"):
        if getattr(settings, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    return settings
