"""Context windows: how many tokens each model of a run reads, and what that means for its prompts.

A window comes from --root-window / --sub-window, else what the model's server said about itself
(model/probe.py: a llama.cpp slot's n_ctx, vLLM's max_model_len), else litellm's model info
(`max_input_tokens`), else DEFAULT_WINDOW. It decides three things: the sub-call capacity the
system prompt states, the largest sub-call prompt that is sent at all (a bigger one gets an error
string in the cell, before any request), and when the root history is compacted (compact.py).

litellm takes seconds to import; when it has not been imported yet, its table is read from the JSON
file it ships (the same table litellm loads with LITELLM_LOCAL_MODEL_COST_MAP, see
model/providers.load_litellm), without importing it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from .budget import CHARS_PER_TOKEN, estimate_prompt_tokens
from .model import prices

# A model litellm does not know is most often a local server (vLLM, llama.cpp, Ollama): those run
# with 8K-32K windows far more often than with the 128K+ of hosted models, which litellm does know.
# Guessing too small costs more, smaller sub-calls and earlier compaction; guessing too large costs
# failed requests or prompts the server silently cuts. So: 32K, and --sub-window/--root-window say
# otherwise.
DEFAULT_WINDOW = 32_768

# Room kept in a window for the model's reply: a quarter of the window, at most 8K tokens (answers
# to sub-calls and root turns are far shorter than their prompts; reasoning models need some room).
REPLY_SHARE = 4
MAX_REPLY_ROOM = 8_192
# Tokens of the instructions a model writes around the text it puts into a sub-call ("Summarise
# this section: ...") and of the chat template: taken off the capacity the prompt states, so a model
# that fills a prompt up to that capacity is not refused.
SCAFFOLD_TOKENS = 512


@dataclass(frozen=True)
class Window:
    tokens: int  # the model's input window
    source: str  # "flag", "server", "litellm" or "default": where the number came from

    @property
    def prompt_limit(self) -> int:
        """Tokens a prompt may take (estimate_prompt_tokens): the window less the reply's room."""
        return self.tokens - reply_room(self.tokens)

    @property
    def capacity_chars(self) -> int:
        """Characters of text the system prompt says one sub-call can hold, rounded down to a
        thousand: the window less the reply's room and the scaffolding, at budget.CHARS_PER_TOKEN
        (4) characters a token. Right for prose and code; dense text (logs, numbers: ~2.5) holds
        fewer, and a prompt of it that does not fit is refused with a size fit for it."""
        chars = max(0, self.prompt_limit - SCAFFOLD_TOKENS) * CHARS_PER_TOKEN
        return max(1_000, chars // 1_000 * 1_000)


def reply_room(window: int) -> int:
    return min(window // REPLY_SHARE, MAX_REPLY_ROOM)


@dataclass(frozen=True)
class Windows:
    """The windows of a run: the root model's, the sub model's, and those of any other model a
    sub-call may name (--allow-model), by model string."""

    root: Window = Window(DEFAULT_WINDOW, "default")
    sub: Window = Window(DEFAULT_WINDOW, "default")
    named: dict[str, Window] = field(default_factory=dict)

    def for_subcall(self, model: str | None) -> Window:
        """The window of a sub-call's model: llm_query(model=None) is the sub model."""
        return self.sub if model is None else self.named.get(model, self.sub)


def resolve(
    root_model: str,
    sub_model: str,
    root_override: int | None = None,
    sub_override: int | None = None,
    others: tuple[str, ...] | list[str] = (),
    root_server: int | None = None,
    sub_server: int | None = None,
) -> Windows:
    """The run's windows: the overrides for the root and sub models, else the windows their servers
    reported (`*_server`), else litellm's table; litellm's table for the rest."""
    root = window_of(root_model, root_override, root_server)
    sub = window_of(sub_model, sub_override, sub_server)
    named = {model: window_of(model) for model in others}
    named.update({root_model: root, sub_model: sub})  # the sub model's flag wins if they are one
    return Windows(root, sub, named)


def window_of(model: str, override: int | None = None, server: int | None = None) -> Window:
    if override is not None:
        return Window(override, "flag")
    if server is not None:  # the server serving it knows better than a table of model names
        return Window(server, "server")
    known = litellm_window(model)
    return Window(known, "litellm") if known else Window(DEFAULT_WINDOW, "default")


def litellm_window(model: str) -> int | None:
    """litellm's `max_input_tokens` for a model string ("openai/gpt-4o-mini"), None if unknown."""
    litellm = sys.modules.get("litellm")
    if litellm is not None and hasattr(litellm, "get_model_info"):  # already paid for: ask it
        try:
            return _tokens(litellm.get_model_info(model=model).get("max_input_tokens"))
        except Exception:  # not in its table: a model on some server
            return None
    return _table_window(model)


def _table_window(model: str) -> int | None:
    """The lookup in litellm's JSON table, read without importing litellm (model/prices.py)."""
    entry = prices.entry(model)
    return _tokens(entry.get("max_input_tokens")) if entry is not None else None


def _tokens(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
        return int(value)
    return None


def subcall_too_large(prompt: str, window: Window) -> str | None:
    """The error string a sub-call prompt beyond its model's window gets instead of a request. The
    size it suggests is this text's own (dense text such as logs has fewer characters per token
    than the capacity the system prompt states assumes)."""
    tokens = estimate_prompt_tokens([{"role": "user", "content": prompt}])
    if tokens <= window.prompt_limit:
        return None
    fits = len(prompt) * max(0, window.prompt_limit - SCAFFOLD_TOKENS) // tokens
    return (
        f"[llm_query error: the prompt is ~{tokens:,} tokens ({len(prompt):,} characters), over the "
        f"sub-model's limit of {window.prompt_limit:,} tokens per prompt (its window: {window.tokens:,} "
        f"tokens, less room for the reply); nothing was sent. Split text like this into pieces of at "
        f"most ~{max(1_000, fits // 1_000 * 1_000):,} characters]"
    )


MIN_REPLY_TOKENS = 256  # a reply cap never goes below this, however full the window


def reply_cap(limit: int | None, window: int | None, prompt_tokens: int) -> int | None:
    """The max_tokens of one call: `limit`, less where the window known for sure (a server's or a
    flag's; None: not known) leaves less room after the prompt. The prompt's size is an estimate
    (characters / 4), and some servers (vLLM) refuse a prompt plus max_tokens beyond the window, so
    the prompt counts a quarter more here."""
    if limit is None:
        return None
    if window is None:
        return limit
    return max(MIN_REPLY_TOKENS, min(limit, window - prompt_tokens * 5 // 4))


# How servers word a prompt beyond their window: llama.cpp ("request (9031 tokens) exceeds the
# available context size (8192 tokens)"), vLLM and OpenAI ("maximum context length is 4096 tokens.
# However, you requested 5000 tokens (...)" / "your request has 5000 input tokens" / "your messages
# resulted in 5000 tokens").
_WINDOW_SAID = re.compile(
    r"(?:available context size|maximum context length is|context window of|context length of)"
    r"\D{0,20}?([\d,]+)\s*tokens",
    re.IGNORECASE,
)
_SENT_SAID = re.compile(
    r"(?:request \(|requested |resulted in |has |prompt (?:is|has|of) )([\d,]+)\s*(?:input )?tokens",
    re.IGNORECASE,
)


def over_window(message: str) -> str | None:
    """For a server's refusal of a prompt beyond its window (a 400), what happened and what to
    change, in words; None for any other message."""
    said = _WINDOW_SAID.search(message)
    if said is None and "context" not in message.lower():
        return None
    if said is None and not re.search(r"exceed|too long|maximum|overflow", message, re.IGNORECASE):
        return None
    window = int(said.group(1).replace(",", "")) if said else None
    sent = _SENT_SAID.search(message)
    size = f" ({int(sent.group(1).replace(',', '')):,} tokens)" if sent else ""
    where = f"the server's context window ({window:,} tokens)" if window else "the server's context window"
    flag = str(window) if window else "N"
    return (
        f"the request{size} exceeds {where}; let rlm size its prompts to it with --sub-window {flag} "
        f"(sub-calls: then smaller chunks) or --root-window {flag}, or give the server a larger window"
    )
