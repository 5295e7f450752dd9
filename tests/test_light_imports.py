"""What the `rlm ask` path loads before its first model request (issue 16, a fast start).

Each check runs in a fresh interpreter: what a module imports is only visible in a process that
had not imported it yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ASK_PATH = "import rlmcli.cli.app, rlmcli.cli.ask, rlmcli.run"


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def modules_after(code: str) -> set[str]:
    return set(json.loads(python(f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")))


def test_a_plain_view_run_path_imports_neither_rich_nor_the_citation_checker() -> None:
    """Off a terminal (pipes, CI, --quiet) the view is plain lines: Rich and pygments (~80 ms) are
    not loaded; citations are checked at the end of a run, so rlmcli.cite is not loaded before."""
    loaded = modules_after(
        f"{ASK_PATH}\nimport io\nfrom rlmcli.view.live import LiveView\n"
        "view = LiveView(stream=io.StringIO())\nview.warn('a warning')\nassert view.plain"
    )
    assert "rlmcli.run" in loaded and "rlmcli.agent" in loaded and "rlmcli.view.live" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("rich", "pygments", "jsonschema", "litellm"))
    assert heavy == []
    assert "rlmcli.cite" not in loaded


def test_a_rich_view_loads_rich_when_it_is_made_and_pygments_with_the_first_cell() -> None:
    out = python(
        "import io, sys\nfrom rlmcli import events as ev\nfrom rlmcli.view.live import LiveView\n"
        "stream = io.StringIO()\nview = LiveView(stream=stream, force_plain=False, live=False)\n"
        "print('rich' in sys.modules, 'pygments' in sys.modules)\n"
        "view(ev.CellStarted(1, 'x = 1'))\nview.close()\n"
        "import re\nshown = re.sub(r'\\x1b\\[[0-9;]*m', '', stream.getvalue())\n"
        "print('pygments' in sys.modules, 'x = 1' in shown)"
    )
    assert out.split() == ["True", "False", "True", "True"]


def test_warm_up_loads_the_transport_and_for_https_only_the_ca_bundle() -> None:
    """The warm-up thread takes the transport's import (h11) and the CA bundle's load (tls_setting)
    off the first https request; a plain-http server (a local model) never needs the bundle."""
    out = python(
        "import sys, threading\nfrom rlmcli.model import openai_http as h\n"
        "def settle():\n"
        "    for t in threading.enumerate():\n"
        "        if t.name == 'rlm-warm-up': t.join()\n"
        "print('h11' in sys.modules)\n"
        "h.warm_up(('http://127.0.0.1:8080/v1/chat/completions',)); settle()\n"
        "print('h11' in sys.modules, h._tls.cache_info().currsize, h.tls_setting('http://127.0.0.1:8080'))\n"
        "h.warm_up(('https://api.openai.com/v1/chat/completions',)); settle()\n"
        "print(h._tls.cache_info().currsize, h.tls_setting('https://api.openai.com/v1') is h._tls())"
    )
    assert out.split() == ["False", "True", "0", "None", "1", "True"]


def test_a_direct_call_never_imports_aiohttp() -> None:
    """A call on the direct path (openai_http over http1) loads h11, and neither aiohttp (~0.3 s of
    CPU at import) nor yarl: litellm still installs them, but nothing of rlm's own path uses them."""
    tests = Path(__file__).resolve().parent
    loaded = modules_after(
        f"import sys\nsys.path.insert(0, {str(tests)!r})\nimport asyncio\nfrom fake_llm import FakeLLM\n"
        "from rlmcli.model import openai_http\n"
        "async def call(url):\n"
        "    http = openai_http.ChatClient()\n"
        "    try:\n"
        "        messages = [{'role': 'user', 'content': 'hello'}]\n"
        "        return await http.chat(url + '/chat/completions', {}, 'm', messages, 10.0)\n"
        "    finally:\n"
        "        await http.aclose()\n"
        "with FakeLLM() as fake:\n"
        "    assert asyncio.run(call(fake.url)).text == 'sub: hello'"
    )
    assert "rlmcli.model.http1" in loaded and "h11" in loaded
    assert not {"aiohttp", "yarl", "litellm"} & loaded
