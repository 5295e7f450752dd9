"""`rlm sandbox`: build an offline image, check what a cell sees, prune leftover containers.

The host side of sandboxes lives in rlmcli/repl/ (and what runs inside them in sandbox/); this module
is only the commands. Mounted by cli/app.py as `app.add_typer(sandbox_app, name="sandbox")`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .guard import guarded, say

sandbox_app = typer.Typer(
    help="Manage the Docker sandbox: build an offline image, check what a cell sees, prune leftovers.",
    no_args_is_help=True,
)


@sandbox_app.command("build")
@guarded
def sandbox_build(
    tag: Annotated[str, typer.Option(help="Name of the image to make.")] = "rlm-sandbox:bookworm",
    suite: Annotated[str, typer.Option(help="Debian suite to bootstrap.")] = "bookworm",
    mirror: Annotated[str | None, typer.Option(help="Debian mirror URL. [default: debootstrap's]")] = None,
) -> None:
    """Build a sandbox image without a registry: a Debian minbase root filesystem with python3
    (debootstrap), imported with `docker import`. Needs root and debootstrap.

    Then `rlm ask` uses it wherever the default image cannot be pulled; or name it: --image
    rlm-sandbox:bookworm (or RLM_SANDBOX_IMAGE=rlm-sandbox:bookworm).
    """

    from ..repl.admin import build_image

    built = build_image(tag, suite, mirror, say=say)
    typer.echo(built)


@sandbox_app.command("check")
@guarded
def sandbox_check(
    image: Annotated[str | None, typer.Option(envvar="RLM_SANDBOX_IMAGE", help="Image to check.")] = None,
    memory: Annotated[str | None, typer.Option(envvar="RLM_MEMORY", help="Memory cap.")] = None,
    cpus: Annotated[float | None, typer.Option(envvar="RLM_CPUS")] = None,
    pids_limit: Annotated[int | None, typer.Option(envvar="RLM_PIDS_LIMIT")] = None,
) -> None:
    """Start a sandbox and print what a cell sees: daemon, image, Python, user, limits, network."""
    from ..repl.admin import check as run_check
    from ..repl.backends import docker_options, sandbox_limits
    from ..settings import resolve

    settings = resolve(dict(image=image, memory=memory, cpus=cpus, pids_limit=pids_limit))
    seen = run_check(docker_options(settings), sandbox_limits(settings))  # what `rlm ask` would use
    for key, value in seen.items():
        typer.echo(f"{key}: {', '.join(value) if isinstance(value, list) else value}")


@sandbox_app.command("prune")
@guarded
def sandbox_prune(
    all_: Annotated[bool, typer.Option("--all", help="Also remove containers of runs still alive.")] = False,
) -> None:
    """Remove sandbox containers left behind by runs that died (rlm also does this on start)."""
    from ..repl.docker import prune as do_prune
    from ..repl.docker import require

    removed = do_prune(require(), everything=all_)
    say(f"removed {len(removed)} container(s)")
    for name in removed:
        typer.echo(name)
