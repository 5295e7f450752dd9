"""Token counts are real: the program's one counter (rlmcli/tokens.py) against tiktoken's o200k_base
loaded the way litellm loads it, on real logs; the sampled estimate of a large input; the REPL's
count_tokens, calibrated by the host, within its stated tolerance; and the offline fallback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import reply

from rlmcli import tokens
from rlmcli.budget import estimate_prompt_tokens, estimate_tokens
from rlmcli.context import load_context
from rlmcli.walk import LoadOptions


@pytest.fixture(scope="module")
def reference():
    """tiktoken's o200k_base as litellm sets it up (its default_encoding module points
    TIKTOKEN_CACHE_DIR at its own copy): a path independent of tokens.py's lookup."""
    import tiktoken

    from rlmcli.model.providers import load_litellm

    load_litellm()  # with litellm's local price table: no network
    import litellm.litellm_core_utils.default_encoding  # noqa: F401

    return tiktoken.get_encoding("o200k_base")


def real_count(enc, text: str) -> int:
    return len(enc.encode_ordinary(text))


@pytest.fixture
def linux_log(shared_data: Path) -> Path:
    return shared_data / "loghub" / "Linux" / "Linux_2k.log"


def test_context_count_is_tiktokens_on_a_real_log(reference, linux_log, tmp_path):
    ctx = load_context([str(linux_log)], tmp_path / "work", LoadOptions())
    text = linux_log.read_bytes().decode("utf-8", "replace")
    want = real_count(reference, text)
    assert abs(ctx.stats.est_tokens - want) <= 0.01 * want, (ctx.stats.est_tokens, want)
    assert not ctx.stats.tokens_sampled
    # The old figure, characters / 4, was a third low here: the count is not that.
    assert len(text) / 4 < 0.8 * ctx.stats.est_tokens
    assert f"~{round(ctx.stats.est_tokens / 1000)}k tokens" in ctx.summary()


def test_budget_estimates_are_the_same_count(reference, shared_data):
    for log in sorted((shared_data / "loghub").glob("*/*_2k.log"))[:4]:
        text = log.read_bytes().decode("utf-8", "replace")
        want = real_count(reference, text)
        assert abs(estimate_tokens(text) - want) <= 0.01 * want, log.name
    assert estimate_tokens("") == 0
    messages = [{"role": "user", "content": "hello world"}]
    assert estimate_prompt_tokens(messages) == real_count(reference, "hello world") + 4


def test_a_large_input_is_counted_on_a_sample_and_says_so(reference, shared_data, tmp_path):
    logs = sorted((shared_data / "loghub").glob("*/*_2k.log"))
    text = "".join(log.read_bytes().decode("utf-8", "replace") for log in logs)
    assert len(text.encode()) > tokens.EXACT_CHARS  # large enough to be sampled
    big = tmp_path / "all.log"
    big.write_text(text, encoding="utf-8")
    want = real_count(reference, text)
    ctx = load_context([str(big)], tmp_path / "work", LoadOptions())
    assert ctx.stats.tokens_sampled and "tokens (estimated)" in ctx.summary()
    # 16 different kinds of log, 64 slices: within 2% (measured: 0.4%).
    assert abs(ctx.stats.est_tokens - want) <= 0.02 * want, (ctx.stats.est_tokens, want)
    counted = tokens.count_text(text)
    assert counted.estimated and abs(counted.tokens - want) <= 0.02 * want


def test_repl_count_tokens_agrees_with_the_host(reference, linux_log, fake_llm, run_cli, tmp_path):
    """The sandbox has no tokenizer: its count_tokens divides by the context's characters per token
    that the host measured. Stated tolerance (sandbox/repl_server.py): the whole context within 1%;
    a part within 10% for most 10,000-character slices of a loghub log."""
    code = "print('COUNTS=%d,%d' % (count_tokens(context), count_tokens(context[:50000])))"
    fake_llm.add_root(reply("", code), "FINAL(done)")
    proc = run_cli(ask_args(fake_llm, str(linux_log), extra=["--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    shown = fake_llm.root_requests[1]["body"]["messages"][-1]["content"]
    found = re.search(r"COUNTS=(\d+),(\d+)", json.dumps(shown))
    assert found, shown
    whole, part = int(found.group(1)), int(found.group(2))
    text = linux_log.read_bytes().decode("utf-8", "replace")
    host = json.loads(proc.stdout)["context"]["est_tokens"]
    assert abs(whole - host) <= 0.01 * host
    assert abs(whole - real_count(reference, text)) <= 0.01 * whole
    want = real_count(reference, text[:50000])
    assert abs(part - want) <= 0.10 * want, (part, want)


def test_the_encoding_is_litellms_copy_and_never_downloaded(monkeypatch, tmp_path):
    folder = tokens.tokenizers_dir()
    assert folder is not None and folder.parts[-3:] == ("litellm", "litellm_core_utils", "tokenizers")
    assert tokens.encoding() is not None and tokens.encoding().name == "o200k_base"
    # Without that file there is no download: counts fall back to characters / 4, marked estimated.
    monkeypatch.setattr(tokens, "tokenizers_dir", lambda: tmp_path)
    tokens.encoding.cache_clear()
    try:
        assert tokens.encoding() is None
        assert tokens.count_text("x" * 400) == tokens.TokenCount(100, True)
    finally:
        tokens.encoding.cache_clear()
    monkeypatch.undo()
    assert tokens.encoding() is not None
