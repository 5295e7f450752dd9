"""How long a model request may go without progress, and how long it may take in all.

`--request-timeout` bounds the time a request makes no progress (connecting, waiting for the first
byte while the server answers nothing else, reading): see openai_http.py. Its default depends on
where the request goes: a provider's API answers within seconds or is in trouble, while a model
served from this machine or the local network (a CPU llama.cpp, a busy vLLM) can take minutes over
one long prompt without sending a byte. A request also ends at TOTAL_FACTOR times its timeout
whatever it receives, so a server trickling bytes cannot hold a run forever.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_S = 120.0  # a provider's API
LOCAL_S = 600.0  # a server on a loopback or private address (or a name such as localhost)
TOTAL_FACTOR = 10  # a request's total deadline: this many times its timeout

LOCAL_NAMES = {"localhost", "host.docker.internal"}
LOCAL_SUFFIXES = (".local", ".localhost", ".internal", ".lan", ".home.arpa")


def default_for(api_base: str | None) -> float:
    """The request timeout when --request-timeout is not given, for requests to `api_base`."""
    return LOCAL_S if api_base and is_local(api_base) else DEFAULT_S


def is_local(url: str) -> bool:
    """Whether a base URL names this machine or a private network: a loopback, private or link-local
    address, or a host name that is one by convention (localhost, *.local, a name without dots: a
    machine or container on the local network).
    No DNS lookup: a name that only resolves to a private address counts as remote."""
    try:
        host = (urlsplit(url if "//" in url else "//" + url).hostname or "").lower()
    except ValueError:
        return False
    if not host:
        return False
    import ipaddress  # here: `rlm --help` reads this module's numbers

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES) or "." not in host
    return address.is_loopback or address.is_private or address.is_link_local


def total_for(timeout: float) -> float:
    return timeout * TOTAL_FACTOR
