"""The key of a model call in the cache of model calls (cache.py): the SHA-256 of what decides its
reply (the kind of call, the model, the identity of the API base, the exact messages, the
parameters that change the reply), never of a credential."""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .providers import ModelConfig

KEY_VERSION = 1  # bump when what a key covers changes: old entries then simply miss
ROLE_AND_CONTENT = operator.itemgetter("role", "content")


def endpoint_identity(api_base: str | None) -> str:
    """Which server answers: scheme, host, port and path of the API base, without credentials or a
    query string (a key may hide in either), nor a trailing slash. "" is the provider's default."""
    if not api_base:
        return ""
    try:
        parts = urlsplit(api_base.strip())
        host = (parts.hostname or "").lower()
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a URL at all: the text, as given, is its identity
        return api_base.strip().rstrip("/")
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


# The line opening each root user message (turns.py) says what is left of the limits: seconds,
# tokens, dollars. It changes from one run to the next (hits cost nothing, time passes), so it is left
# out of the key; "Turn i of N." stays.
BUDGET_LEFT = re.compile(r"\A(Turn \d+ of \d+[^\n]*?\.) Budget left: [^\n]*")


def call_key(
    kind: str, model: str, api_base: str | None, messages: list[dict], params: dict | None = None
) -> str:
    """The key of one call. `kind` counts: a sub-call's reply may fall back to the reasoning text;
    `params`: the request's parameters that change the reply (key_params).

    The SHA-256 of the JSON document {endpoint, kind, messages, model, params, v} (sorted keys), fed
    in pieces so that a root conversation's messages already hashed are not encoded again."""
    return _CHAINS.key(kind, _head(kind, api_base), model, params or {}, messages)


@functools.lru_cache(maxsize=64)
def _head(kind: str, api_base: str | None) -> bytes:
    """The document up to its messages (its keys sorted: endpoint, kind, messages, model, ...)."""
    return _encode(_dumps({"endpoint": endpoint_identity(api_base), "kind": kind})[:-1] + ', "messages": [')


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _message(kind: str, message: dict) -> bytes:
    return _encode(_dumps({"role": message.get("role"), "content": _stable(kind, message)}))


@dataclass
class _Chain:
    head: bytes  # the document up to its messages: the endpoint and the kind
    seen: list[tuple[object, str]]  # (role, content) of the messages hashed, in order
    states: list[Any]  # states[i]: the hash of head and the first i messages


class _Chains:
    """The hash states of the last few root conversations, message by message.

    A root call sends the whole history again, and the client keys it twice (lookup, store): encoding
    it whole each time cost ~0.2 ms at 50 messages and ~0.7 ms at 200. A call whose leading messages
    equal (mostly: are the very str objects of) those of a conversation hashed before resumes from
    the state after them; only the messages added since are encoded. A conversation changed in place
    (compaction) resumes from the last message still the same. Only str contents are kept: a list
    could change after it was hashed."""

    MAX = 8  # conversations kept: a run's root and its children

    def __init__(self) -> None:
        self.chains: list[_Chain] = []  # the most recently used last
        self.lock = threading.Lock()  # keys are made on the loop's thread and in rerun's workers
        # The latest root key: ((head, model, params), (role, content) of each message, key). The
        # client keys each call twice, for its lookup and its store, with the same messages.
        self.last: tuple[tuple, list, str] | None = None

    def key(self, kind: str, head: bytes, model: str, params: dict, messages: list[dict]) -> str:
        """The hex key of the document {endpoint, kind, messages, model, params, v}."""
        ident = (head, model, params)
        last = self.last
        if kind == "root" and last is not None and last[0] == ident:
            try:
                if last[1] == list(map(ROLE_AND_CONTENT, messages)):  # in C: `is` first, then ==
                    return last[2]
            except KeyError:
                pass
        hasher, pairs = self.hash(kind, head, messages)
        hasher.update(_encode("], " + _dumps({"model": model, "params": params, "v": KEY_VERSION})[1:]))
        key = hasher.hexdigest()
        if pairs is not None:  # every content a str: the pairs say all the key covers
            self.last = (ident, pairs, key)
        return key

    def hash(self, kind: str, head: bytes, messages: list[dict]) -> tuple[Any, list | None]:
        """The hash of `head` and the messages, and (for a root call whose contents are all str)
        their (role, content) pairs."""
        if kind != "root":  # a sub-call is one message, asked once: nothing to resume
            hasher = hashlib.sha256(head)
            for i, message in enumerate(messages):
                hasher.update(b", " + _message(kind, message) if i else _message(kind, message))
            return hasher, None
        try:  # (role, content) of each message, in C: this runs over the whole history twice a turn
            pairs = list(map(ROLE_AND_CONTENT, messages))
        except KeyError:
            pairs = [(m.get("role"), m.get("content")) for m in messages]
        with self.lock:
            chain, same = self._longest(head, pairs)
            if chain is None or (same < len(chain.seen) and same < 2):  # another conversation
                chain = _Chain(head, [], [hashlib.sha256(head)])
                self.chains.append(chain)
                del self.chains[: -self.MAX]
            else:  # the same conversation, grown (or changed after its system and first user message)
                del chain.seen[same:], chain.states[same + 1 :]
                self.chains.remove(chain)
                self.chains.append(chain)
            hasher = chain.states[-1].copy()
            keep: _Chain | None = chain
            for i in range(len(chain.seen), len(messages)):
                hasher.update(b", " + _message(kind, messages[i]) if i else _message(kind, messages[i]))
                if keep is not None and isinstance(pairs[i][1], str):
                    keep.seen.append(pairs[i])  # type: ignore[arg-type]
                    keep.states.append(hasher.copy())
                else:
                    keep = None
            return hasher, (pairs if keep is not None else None)

    def _longest(self, head: bytes, pairs: list[tuple[object, object]]) -> tuple[_Chain | None, int]:
        """The chain sharing the most leading messages with `pairs`, and how many."""
        best, most = None, 0
        for chain in self.chains:
            if chain.head != head:
                continue
            known = len(chain.seen)
            if known <= len(pairs) and chain.seen == pairs[:known]:  # in C: `is` first, then ==
                same = known
            else:  # changed in place: where
                same = next(
                    (i for i, (a, b) in enumerate(zip(chain.seen, pairs, strict=False)) if a != b),
                    min(known, len(pairs)),
                )
            if best is None or same > most:
                best, most = chain, same
        return best, most


_CHAINS = _Chains()


def key_params(cfg: ModelConfig) -> dict:
    """What of a model's configuration changes its replies: the cap on a reply's tokens (a shorter
    cap cuts a reply short). Timeouts and retries do not."""
    cap = getattr(cfg, "max_reply_tokens", None)
    return {} if cap is None else {"max_reply_tokens": cap}


def _stable(kind: str, message: dict) -> object:
    content = message.get("content")
    if kind == "root" and message.get("role") == "user" and isinstance(content, str):
        return BUDGET_LEFT.sub(r"\1", content, count=1)
    return content
