"""What a model server says about itself: its slots (requests it decodes at once) and its window.

When a run is given a base URL (--api-base, --sub-api-base), each distinct URL is asked once, at
start, with a short timeout: llama.cpp's `/props` (`total_slots`, and the window of one slot:
`default_generation_settings.n_ctx`), then the OpenAI `/models` list (vLLM's `max_model_len`;
`context_length` and kin from other servers; llama.cpp's `meta.n_ctx`). The run then sends no more
sub-calls at once than the server has slots (unless --concurrency says otherwise: requests beyond
the slots only wait in the server's queue), and sizes sub-call prompts and compaction to the window
(unless --sub-window / --root-window say otherwise): see run.py and windows.py.

The probes run on threads started before the input is loaded, so a local server's answer costs the
run nothing; a server that does not answer costs at most PROBE_TIMEOUT_S, in parallel with the
load. Nothing is learned from a server that is down, needs a key for these routes, or is not one of
these: the run goes on as without a probe (and the model call reports what is wrong). Standard
library only: no litellm, no aiohttp.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PROBE_TIMEOUT_S = 2.0  # per request; a server on this machine answers in milliseconds
MAX_BODY_BYTES = 8 * 1024 * 1024  # a hosted gateway's model list can be large; bigger ones are skipped
# Keys of an entry of the /models list that give a model's context window, by server: vLLM,
# OpenRouter/LM Studio/others, and llama.cpp's own `meta.n_ctx`.
WINDOW_KEYS = ("max_model_len", "context_length", "max_context_length", "context_window", "n_ctx")


@dataclass(frozen=True)
class ServerInfo:
    """What one server said about itself; None where it said nothing."""

    url: str  # the base URL as the user gave it
    kind: str  # "llama.cpp", "vLLM" or "OpenAI-compatible"
    slots: int | None = None  # requests the server decodes at once (llama.cpp's total_slots)
    window: int | None = None  # tokens of one request's context (one slot's, for llama.cpp)

    def describe(self, concurrency: int | None = None) -> str:
        """One line for stderr: what was learned, and what the run does with it."""
        parts = [f"{self.kind} server at {self.url}"]
        if self.slots is not None:
            parts.append(f"{self.slots} slot{'s' if self.slots != 1 else ''}")
        if self.window is not None:
            per = " per slot" if self.slots is not None and self.slots > 1 else ""
            parts.append(f"a window of {self.window:,} tokens{per}")
        line = ", ".join(parts)
        if concurrency is not None:
            line += f"; sub-calls run {concurrency} at once (--concurrency to change)"
        return line


def origin_of(url: str) -> str:
    """The scheme and host of a base URL: llama.cpp serves /props there, not under /v1."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _get_json(url: str, headers: Mapping[str, str], timeout: float) -> Any:
    """The JSON a GET returns, or None for any failure (an error status, no server, not JSON)."""
    import urllib.request  # ~40 ms, on the probe's thread: a run without a base URL never pays it

    request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the user's URL
            body = response.read(MAX_BODY_BYTES + 1)
    except (OSError, ValueError):  # refused, DNS, TLS, timeout, 4xx/5xx (URLError is an OSError), bad URL
        return None
    if len(body) > MAX_BODY_BYTES:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _count(value: object) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value < 2**31:
        return int(value)
    return None


def from_props(url: str, props: object) -> ServerInfo | None:
    """llama.cpp's /props: `total_slots`, and one slot's `n_ctx` (in default_generation_settings in
    current versions, at the top level in some older ones)."""
    if (
        not isinstance(props, dict)
        or "total_slots" not in props
        and "default_generation_settings" not in props
    ):
        return None
    settings = props.get("default_generation_settings")
    settings = settings if isinstance(settings, dict) else {}
    window = _count(settings.get("n_ctx")) or _count(props.get("n_ctx"))
    return ServerInfo(url, "llama.cpp", slots=_count(props.get("total_slots")), window=window)


def from_models(url: str, listing: object, model: str | None) -> ServerInfo | None:
    """An OpenAI /models list: the window of the entry named `model` (else of the only entry)."""
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return None
    entries = [e for e in data if isinstance(e, dict)]
    named = [e for e in entries if model is not None and e.get("id") == model]
    entry = named[0] if named else entries[0] if len(entries) == 1 else None
    kind = "OpenAI-compatible"
    if entry is None:
        return ServerInfo(url, kind)
    if entry.get("owned_by") == "vllm":
        kind = "vLLM"
    elif entry.get("owned_by") == "llamacpp":
        kind = "llama.cpp"
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    window = next(
        (w for key in WINDOW_KEYS if (w := _count(entry.get(key) or meta.get(key))) is not None), None
    )
    return ServerInfo(url, kind, window=window)


def probe(url: str, model: str | None = None, headers: Mapping[str, str] | None = None,
          timeout: float = PROBE_TIMEOUT_S) -> ServerInfo | None:  # fmt: skip
    """What the server at `url` (an OpenAI base URL, e.g. http://127.0.0.1:8080/v1) says about
    itself; `model` is the name requests carry (without litellm's provider prefix). None when it
    says nothing we read."""
    headers = dict(headers or {})
    base = url.rstrip("/").removesuffix("/chat/completions")
    info = from_props(url, _get_json(origin_of(base) + "/props", headers, timeout))
    if info is not None and info.slots is not None and info.window is not None:
        return info
    listed = from_models(url, _get_json(base + "/models", headers, timeout), model)
    if info is None:
        return listed
    # An older llama.cpp without one of the two in /props: /models may have the window.
    window = info.window or (listed.window if listed is not None else None)
    return ServerInfo(url, info.kind, slots=info.slots, window=window)


class Probes:
    """The probes of one run, one per distinct base URL, each on its own thread from `start` on."""

    def __init__(self) -> None:
        self._results: dict[str, ServerInfo | None] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, url: str, model: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        if url in self._threads:
            return

        def run() -> None:
            self._results[url] = probe(url, model, headers)

        thread = threading.Thread(target=run, name=f"rlm-probe-{len(self._threads)}", daemon=True)
        self._threads[url] = thread
        thread.start()

    def result(self, url: str | None) -> ServerInfo | None:
        """What the server at `url` said (waiting for its probe); None for no URL or no answer."""
        if url is None or url not in self._threads:
            return None
        self._threads[url].join(timeout=4 * PROBE_TIMEOUT_S + 1)  # two requests, each bounded
        return self._results.get(url)

    def urls(self) -> Iterable[str]:
        return list(self._threads)


def start(targets: Iterable[tuple[str, str | None]]) -> Probes:
    """Probes of the base URLs among (model, base URL) pairs (a model without one is not probed),
    started on their threads. The model names the entry to read in a /models list."""
    probes = Probes()
    for model, base in targets:
        if base:
            probes.start(base, model.split("/", 1)[-1])  # the name requests carry: no provider prefix
    return probes
