"""Token counts are real: the program's one counter (rlmcli/tokens.py) against tiktoken's o200k_base
loaded the way litellm loads it, on real logs; the sampled estimate of a large input; the REPL's
count_tokens, calibrated by the host, within its stated tolerance; the offline fallback; the cache
of the parsed ranks (same tokens, damage and unwritable dirs survived) and preload()."""

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
    tokens.reset()
    try:
        assert tokens.encoding() is None
        assert tokens.count_text("x" * 400) == tokens.TokenCount(100, True)
    finally:
        tokens.reset()
    monkeypatch.undo()
    assert tokens.encoding() is not None


# -- the cache of the parsed ranks, and preload() -------------------------------------------------


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """tokens.py as in a new process, with its cache dir under tmp_path (RLM_HOME/cache); the
    encoding is forgotten again after the test, so that no other test gets what this one built."""
    monkeypatch.setenv("RLM_HOME", str(tmp_path / "home"))
    tokens.reset()
    yield tmp_path / "home" / "cache"
    tokens.reset()


def no_parse(monkeypatch) -> None:
    """From here on, parsing litellm's file fails: an encoding can only come from the cache."""
    from tiktoken_ext import openai_public

    def refuse():
        raise AssertionError("parsed the ranks file, although a good cache was there")

    monkeypatch.setitem(openai_public.ENCODING_CONSTRUCTORS, tokens.ENCODING, refuse)


def sample_texts(shared_data: Path) -> list[str]:
    logs = sorted((shared_data / "loghub").glob("*/*_2k.log"))[:3]
    texts = [log.read_bytes().decode("utf-8", "replace") for log in logs]
    repo = Path(tokens.__file__).parents[1]
    texts.append((repo / "README.md").read_text(encoding="utf-8"))
    texts.append((repo / "rlmcli" / "tokens.py").read_text(encoding="utf-8"))
    texts.append("Grüße, 世界! Ünïcödé 🙂🚀 — «quotes» \u00e9\t\r\n  tabs\\tand  spaces  ")
    return texts


def same_tokens(enc, reference, texts: list[str]) -> None:
    for text in texts:
        assert enc.encode_ordinary(text) == reference.encode_ordinary(text)
    special = "text<|endoftext|>more<|endofprompt|>"
    assert enc.encode(special, allowed_special="all") == reference.encode(special, allowed_special="all")
    assert (enc.name, enc.n_vocab, enc.max_token_value) == (
        reference.name,
        reference.n_vocab,
        reference.max_token_value,
    )


def test_the_encoding_from_the_cache_gives_tiktokens_tokens(reference, shared_data, fresh, monkeypatch):
    first = tokens.encoding()  # parses litellm's file, as before there was a cache, and keeps it
    assert [p.name for p in fresh.iterdir()] == [p.name for p in fresh.glob("o200k_base-*.marshal")]
    assert len(list(fresh.iterdir())) == 1  # one file, no temp file left
    tokens.reset()
    no_parse(monkeypatch)
    cached = tokens.encoding()  # a new process: the ranks come from the cache
    assert cached is not first
    texts = sample_texts(shared_data)
    same_tokens(cached, reference, texts)
    same_tokens(first, reference, texts)
    assert tokens.count_text(texts[0]) == tokens.TokenCount(len(reference.encode_ordinary(texts[0])), False)


@pytest.mark.parametrize("damage", ["garbage", "cut", "flipped", "not the ranks"])
def test_a_damaged_cache_is_parsed_again_and_rewritten(damage, reference, shared_data, fresh):
    import hashlib
    import marshal

    tokens.encoding()
    (cache,) = fresh.glob("o200k_base-*.marshal")
    data = cache.read_bytes()
    if damage == "garbage":
        data = b"\x00not a cache" * 100
    elif damage == "cut":
        data = data[: len(data) // 2]
    elif damage == "flipped":  # a byte changed in the middle of the ranks
        middle = len(data) // 2
        data = data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1 :]
    else:  # a well-formed file of ours holding something else
        payload = marshal.dumps(["o200k_base"])
        data = tokens.CACHE_FORMAT + hashlib.sha256(payload).digest() + payload
    cache.write_bytes(data)
    tokens.reset()
    enc = tokens.encoding()
    same_tokens(enc, reference, sample_texts(shared_data))
    assert cache.read_bytes()[: len(tokens.CACHE_FORMAT)] == tokens.CACHE_FORMAT  # written again, whole
    assert tokens._read_cache(cache) is not None


def test_an_unwritable_cache_dir_costs_nothing_but_the_cache(reference, monkeypatch, tmp_path):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache dir should be")
    monkeypatch.setenv("RLM_HOME", str(blocker))
    tokens.reset()
    try:
        enc = tokens.encoding()
        assert enc is not None and enc.encode_ordinary("hello world") == reference.encode_ordinary(
            "hello world"
        )
    finally:
        tokens.reset()
    assert blocker.read_text() == "a file where the cache dir should be"


def test_another_copy_of_litellms_file_has_a_cache_of_its_own(fresh, monkeypatch, tmp_path):
    """The cache is keyed on the source file (path, size, mtime): a new litellm's copy is parsed
    again and cached apart; a cache unwritten for a week goes when another is written."""
    import hashlib
    import os
    import shutil

    name = hashlib.sha1(tokens.ENCODING_URL.encode()).hexdigest()
    copy = tmp_path / "tokenizers"
    copy.mkdir()
    shutil.copy(tokens.tokenizers_dir() / name, copy / name)
    monkeypatch.setattr(tokens, "tokenizers_dir", lambda: copy)

    def reinstall(seconds: int) -> Path:
        """The same file as a reinstall leaves it (a new mtime); its cache, after a load."""
        stat = (copy / name).stat()
        os.utime(copy / name, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))
        tokens.reset()
        known = set(fresh.glob("o200k_base-*.marshal"))
        tokens.encoding()
        (new,) = set(fresh.glob("o200k_base-*.marshal")) - known
        return new

    first = reinstall(0)
    second = reinstall(1)
    assert set(fresh.glob("o200k_base-*.marshal")) == {first, second}  # both installs keep theirs
    week_old = first.stat().st_mtime - 8 * 86400
    os.utime(first, (week_old, week_old))
    third = reinstall(1)
    assert set(fresh.glob("o200k_base-*.marshal")) == {second, third}
    tokens.reset()
    no_parse(monkeypatch)
    assert tokens.encoding().encode_ordinary("hello world")  # the newest copy's cache serves it


def test_preload_loads_once_and_every_caller_gets_that_encoding(fresh, monkeypatch):
    import threading
    import time

    loads = []
    release = threading.Event()

    def slow_load():
        loads.append(threading.current_thread().name)
        release.wait(10)  # until every caller below is waiting
        return ("the encoding",), None

    monkeypatch.setattr(tokens, "_load", slow_load)
    tokens.preload()
    tokens.preload()  # a second call starts nothing
    got = []
    callers = [threading.Thread(target=lambda: got.append(tokens.encoding())) for _ in range(6)]
    for caller in callers:
        caller.start()
    time.sleep(0.05)  # not a timing assertion: only lets the callers reach the lock first
    release.set()
    for caller in callers:
        caller.join(10)
    assert loads == ["rlm-tokenizer"]
    assert got == [("the encoding",)] * 6 and tokens.encoding() == ("the encoding",)


def test_a_preload_that_fails_is_retried_by_the_caller_quietly(fresh, monkeypatch, capfd):
    calls = []

    def failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk went away")
        return ("the encoding",), None

    monkeypatch.setattr(tokens, "_load", failing_once)
    tokens.preload()
    tokens._preloader.join(10)
    assert tokens.encoding() == ("the encoding",) and len(calls) == 2
    assert "disk went away" not in capfd.readouterr().err  # no thread traceback on the user's terminal
    # With no preload, a failing load raises in the caller as it always did.
    tokens.reset()
    monkeypatch.setattr(tokens, "_load", lambda: (_ for _ in ()).throw(OSError("still gone")))
    with pytest.raises(OSError, match="still gone"):
        tokens.encoding()


def test_rlm_files_keeps_the_cache_and_counts_the_same_with_it(reference, rlm_bin, linux_log, tmp_path):
    """What a user sees: the first `rlm files` writes the cache under RLM_HOME, the next reads it;
    both give tiktoken's count."""
    import subprocess

    from conftest import clean_env

    env = clean_env(tmp_path)
    want = real_count(reference, linux_log.read_bytes().decode("utf-8", "replace"))
    counts = []
    for _ in range(2):
        proc = subprocess.run(
            [rlm_bin, "files", str(linux_log), "--json"], env=env, capture_output=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr.decode()
        counts.append(json.loads(proc.stdout)["totals"]["tokens"])
        assert len(list((Path(env["RLM_HOME"]) / "cache").glob("o200k_base-*.marshal"))) == 1
    assert counts[0] == counts[1] and abs(counts[0] - want) <= 0.01 * want, (counts, want)


@pytest.mark.parametrize("args", [["--help"], ["ask", "--help"], ["files", "--help"]])
def test_help_never_loads_tiktoken(args, rlm_bin, tmp_path):
    import subprocess
    import sys

    from conftest import clean_env

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", rlm_bin, *args],
        env=clean_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    modules = [
        line.split("|")[-1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    ]
    assert "typer" in modules  # the listing is real
    assert "tiktoken" not in modules
