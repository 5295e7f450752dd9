"""The options `rlm ask` and `rlm bench run` share, declared once: a name, its environment variable,
its help panel and its help text, so the two commands cannot drift apart.

Each is an `Annotated` alias; a command declares `model: Model = None`. Every default is None: the
value comes from the flag, else the environment, else config.toml, else the built-in default
(settings.resolve), whose value the help text shows.

Only typer and settings.py are imported: this module is loaded whenever `rlm --help` runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..model import timeouts
from ..settings import Settings

D = Settings()  # defaults, for the help texts
MODEL, LIMITS, SANDBOX, INPUT, OUTPUT = "Model", "Limits", "Sandbox", "Input", "Output"

# -- the model --------------------------------------------------------------------------------

Model = Annotated[str | None, typer.Option("--model", "-m", envvar="RLM_MODEL", rich_help_panel=MODEL,
    help=f"Root model, any litellm model string. \\[default: {D.model}]")]  # fmt: skip
SubModel = Annotated[str | None, typer.Option(envvar="RLM_SUB_MODEL", rich_help_panel=MODEL,
    help="Model for llm_query sub-calls. \\[default: the root model]")]  # fmt: skip
ApiBase = Annotated[str | None, typer.Option(envvar="RLM_API_BASE", rich_help_panel=MODEL,
    help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")]  # fmt: skip
SubApiBase = Annotated[str | None, typer.Option(envvar="RLM_SUB_API_BASE", rich_help_panel=MODEL,
    help="Base URL for sub-calls. \\[default: --api-base if the sub model has the root model's "
         "provider, else the provider's own endpoint]")]  # fmt: skip
RequestTimeout = Annotated[float | None, typer.Option(envvar="RLM_REQUEST_TIMEOUT", rich_help_panel=MODEL,
    help="Seconds a model request may go without progress (connecting, waiting, reading). "
         f"\\[default: {timeouts.DEFAULT_S:g}; {timeouts.LOCAL_S:g} for a server on a local or private "
         "address]")]  # fmt: skip
MaxRetries = Annotated[int | None, typer.Option(envvar="RLM_MAX_RETRIES", rich_help_panel=MODEL,
    help=f"Retries on 429/5xx/timeouts, with backoff. \\[default: {D.max_retries}]")]  # fmt: skip
Instructions = Annotated[str | None, typer.Option("--instructions", "-s", envvar="RLM_INSTRUCTIONS",
    rich_help_panel=MODEL, metavar="TEXT", show_default=False,
    help="Extra instructions appended to the root model's system prompt, e.g. \"answer in German\".")]  # fmt: skip

RootWindow = Annotated[int | None, typer.Option(envvar="RLM_ROOT_WINDOW", rich_help_panel=MODEL,
    metavar="TOKENS",
    help="The root model's context window; older cell outputs are compacted as the history nears it. "
         "\\[default: litellm's model info, else 32768]")]  # fmt: skip
SubWindow = Annotated[int | None, typer.Option(envvar="RLM_SUB_WINDOW", rich_help_panel=MODEL,
    metavar="TOKENS",
    help="The sub model's context window (set it for local servers): the prompt tells the root model "
         "what fits, and a larger sub-call prompt is refused in the cell. \\[default: litellm's model "
         "info, else 32768]")]  # fmt: skip

MaxReplyTokens = Annotated[int | None, typer.Option(envvar="RLM_MAX_REPLY_TOKENS", rich_help_panel=MODEL,
    metavar="TOKENS",
    help="Most tokens of a root-model reply (sent as max_tokens; less where a known window leaves less). "
         "A reply cut there is reported to the model, and its unfinished code is not run. \\[default: 8192; "
         "none for a reasoning model at its provider's own API]")]  # fmt: skip
MaxSubReplyTokens = Annotated[int | None, typer.Option(envvar="RLM_MAX_SUB_REPLY_TOKENS",
    rich_help_panel=MODEL, metavar="TOKENS",
    help="Most tokens of a sub-call's reply (max_tokens). \\[default: 4096; none for a reasoning model at "
         "its provider's own API]")]  # fmt: skip
Price = Annotated[str | None, typer.Option(envvar="RLM_PRICE", rich_help_panel=MODEL, metavar="IN,OUT",
    help="USD per million prompt and completion tokens of a model served from --api-base/--sub-api-base "
         "(or missing from litellm's table), e.g. 0.15,0.60. \\[default: unknown: cost is null, --max-cost "
         "cannot limit it]")]  # fmt: skip

Cite = Annotated[str | None, typer.Option("--cite", envvar="RLM_CITE", rich_help_panel=OUTPUT,
    metavar="off|check|require",
    help="Evidence for the answer: the model cites input lines with cite(), printed after the answer "
         "under Sources: (cut from the input by rlm); quotes and path:N references it typed are checked, "
         "and what fails is reported on stderr. require: no verified citation or a failed check gets one "
         f"repair turn, then exit 6; off: none of it. \\[default: {D.cite}]")]  # fmt: skip

NoCache = Annotated[bool, typer.Option("--no-cache", rich_help_panel=MODEL,
    help="Neither read nor write the cache of model calls (by default a call already made is answered "
         "from the cache, at no cost; `rlm cache`).")]  # fmt: skip
CacheOnly = Annotated[bool, typer.Option("--cache-only", rich_help_panel=MODEL,
    help="Offline: every model reply from the cache, no request, no key; a call not in it ends the run "
         "(exit 4).")]  # fmt: skip

# -- limits (for `bench run`: of each row) ----------------------------------------------------

MaxIterations = Annotated[int | None, typer.Option(envvar="RLM_MAX_ITERATIONS", rich_help_panel=LIMITS,
    help=f"Root-model turns before a last call for the answer. \\[default: {D.max_iterations}]")]  # fmt: skip
MaxCost = Annotated[float | None, typer.Option(envvar="RLM_MAX_COST", rich_help_panel=LIMITS,
    help="Most USD to spend, sub-calls included. \\[default: no limit]")]  # fmt: skip
MaxTokens = Annotated[int | None, typer.Option(envvar="RLM_MAX_TOKENS", rich_help_panel=LIMITS,
    help="Most tokens (prompt + completion), sub-calls included. \\[default: no limit]")]  # fmt: skip
MaxDepth = Annotated[int | None, typer.Option(envvar="RLM_MAX_DEPTH", rich_help_panel=LIMITS,
    help="Levels of recursion: 1 makes rlm_query an llm_query; 2 or more lets rlm_query start child RLMs "
         f"(each with its own REPL in the same sandbox, one budget for the tree). \\[default: {D.max_depth}]")]  # fmt: skip
MaxChildren = Annotated[int | None, typer.Option(envvar="RLM_MAX_CHILDREN", rich_help_panel=LIMITS,
    help=f"Child RLMs of one rlm_query_batched running at once. \\[default: {D.max_children}]")]  # fmt: skip
ChildIterations = Annotated[int | None, typer.Option(envvar="RLM_CHILD_ITERATIONS", rich_help_panel=LIMITS,
    help=f"Root-model turns of each child RLM. \\[default: {D.child_iterations}]")]  # fmt: skip
Timeout = Annotated[float | None, typer.Option(envvar="RLM_TIMEOUT", rich_help_panel=LIMITS,
    help="Wall-clock seconds for the run, after start-up. \\[default: no limit]")]  # fmt: skip

# -- the sandbox ------------------------------------------------------------------------------

Sandbox = Annotated[str | None, typer.Option(envvar="RLM_SANDBOX", rich_help_panel=SANDBOX,
    help="Where model-written code runs: docker (a container: no network, no host files but the "
         "inputs, capped memory/CPU/processes), local (bubblewrap: the same without Docker — no "
         "network, no host files but the inputs, read-only system, rlimits), process (a plain child "
         "process — WEAKER isolation: it reads what your user can read and reaches the network; only "
         "when asked for), or auto (docker when a daemon answers, else local, else an error). "
         "\\[default: auto]")]  # fmt: skip
Image = Annotated[str | None, typer.Option(envvar="RLM_SANDBOX_IMAGE", rich_help_panel=SANDBOX,
    help=f"Docker image with python3 >= 3.9; offline: `rlm sandbox build`. \\[default: {D.image}]")]  # fmt: skip

# -- the input (`rlm ask` and `rlm files`) ----------------------------------------------------

Include = Annotated[list[str] | None, typer.Option("--include", "-g", rich_help_panel=INPUT, metavar="GLOB",
    help="Only load directory files matching this glob; '!GLOB' skips matches instead. Repeatable, the "
         "last match wins (as rg -g).", show_default=False)]  # fmt: skip
Exclude = Annotated[list[str] | None, typer.Option("--exclude", "-x", rich_help_panel=INPUT, metavar="GLOB",
    help="Skip directory entries matching this glob (repeatable).", show_default=False)]  # fmt: skip
NoIgnore = Annotated[bool, typer.Option("--no-ignore", rich_help_panel=INPUT,
    help="Read no ignore file. By default: .gitignore, .ignore and .rlmignore of each directory and of its "
         "parents up to the git repository root, .git/info/exclude, and git's global excludes file "
         "(core.excludesFile, else ~/.config/git/ignore).")]  # fmt: skip
Hidden = Annotated[bool, typer.Option("--hidden", rich_help_panel=INPUT,
    help="Include hidden files and directories (never .git/).")]  # fmt: skip
MaxFileSize = Annotated[str | None, typer.Option(envvar="RLM_MAX_FILE_SIZE", rich_help_panel=INPUT,
    help=f"Skip directory files over this size (named files: never). \\[default: {D.max_file_size}]")]  # fmt: skip
