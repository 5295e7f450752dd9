"""`rlm cache`: the cache of model calls (model/cache.py): how big it is, where it is, clear it.

cli/app.py imports this module at startup: only typer and the standard library at module level.
"""

from __future__ import annotations

import time

import typer

from .guard import guarded

cache_app = typer.Typer(
    help="The cache of model calls: a call already made is answered from it, at no cost.",
    no_args_is_help=True,
    add_completion=False,  # completions come from scripts/gen-completions.py, for all of rlm
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _cache():  # noqa: ANN202 - model.cache.CallCache, imported when a command runs
    from ..model.cache import CallCache
    from ..settings import resolve

    return CallCache(max_bytes=resolve({}).cache_size_bytes)


@cache_app.command("stats")
@guarded
def stats() -> None:
    """How many replies the cache holds, its size against its cap (`cache-size` in the config)."""
    cache = _cache()
    found = cache.stats()
    typer.echo(f"path:     {cache.path}")
    typer.echo(f"entries:  {found.entries:,}")
    typer.echo(f"size:     {_size(found.bytes)} of {_size(cache.max_bytes)} (least recently used go first)")
    if found.newest is not None:
        typer.echo(f"last use: {time.strftime('%Y-%m-%d %H:%M', time.localtime(found.newest))}")


@cache_app.command("clear")
@guarded
def clear() -> None:
    """Delete every cached reply: the next runs pay for their calls again."""
    cache = _cache()
    typer.echo(f"cleared {cache.clear():,} cached replies from {cache.path}")


@cache_app.command("path")
@guarded
def path() -> None:
    """Print the cache file's path (it follows RLM_HOME)."""
    from ..model.cache import cache_path

    typer.echo(str(cache_path()))
