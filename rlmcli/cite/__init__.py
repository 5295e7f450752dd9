"""Evidence for answers: cited spans cut from the input by the host, typed quotes and `path:N`
references checked (`--cite off|check|require`). See check.py for the checks, render.py for the
`Sources:` block, source.py for how the input is read."""

from .check import MODES, Citation, Evidence, Unverified, check
from .render import repair_message, sources_block

__all__ = ["MODES", "Citation", "Evidence", "Unverified", "check", "repair_message", "sources_block"]
