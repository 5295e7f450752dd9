"""`rlm completion bash|zsh|fish`: print the shell's completion script.

The scripts are static files generated from the CLI by scripts/gen-completions.py into completions/;
the wheel carries them as rlmcli/_completions/ (pyproject's force-include), so an installed `rlm`
can print them without the source tree. Mounted by cli/app.py.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import RlmError
from .guard import guarded

FILES = {"bash": "rlm.bash", "zsh": "_rlm", "fish": "rlm.fish"}  # as scripts/gen-completions.py names them


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


EPILOG = """Install (each loads on demand; no Python runs when you press TAB):\n
  bash: rlm completion bash > ~/.local/share/bash-completion/completions/rlm\n
  zsh:  rlm completion zsh > ~/.zfunc/_rlm   (and in ~/.zshrc, before compinit: fpath=(~/.zfunc $fpath))\n
  fish: rlm completion fish > ~/.config/fish/completions/rlm.fish"""


def script_path(shell: str) -> Path:
    """The completion script for `shell`: inside the installed wheel, or in the source tree."""
    package = Path(__file__).resolve().parents[1]  # rlmcli/
    name = FILES[shell]
    for candidate in (package / "_completions" / name, package.parent / "completions" / name):
        if candidate.is_file():
            return candidate
    raise RlmError(f"the {shell} completion script is missing from the installation; reinstall rlm")


@guarded
def completion(
    shell: Annotated[Shell, typer.Argument(help="The shell to print the completion script for.")],
) -> None:
    """Print the completion script for bash, zsh or fish on stdout."""
    typer.echo(script_path(shell.value).read_text(encoding="utf-8"), nl=False)
