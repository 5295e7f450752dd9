"""The cache of model calls (issue 14): a second identical run is free, --cache-only is offline,
concurrent runs share the file, no key is ever in it; `rlm cache`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from conftest import MODEL, SENTINEL_KEY, ask_args, clean_env, popen_rlm
from fake_llm import FakeLLM, reply

from rlmcli.budget import Budget
from rlmcli.model import cache as cache_module
from rlmcli.model.cache import CallCache, call_key, endpoint_identity, key_params
from rlmcli.model.cache_key import _stable
from rlmcli.model.completion import Completion
from rlmcli.model.providers import ModelConfig

COUNT_AND_ASK = (
    "hits = grep('Failed password')\n"
    "summary = llm_query_batched(['Summarise: ' + h for h in [str(hits[0]), str(hits[1])]])\n"
    "answer = f'{len(hits)} failed logins; ' + summary[0]\n"
    "print(answer)"
)


def home_of(tmp_path: Path) -> Path:
    return Path(clean_env(tmp_path)["RLM_HOME"])


def cache_file(tmp_path: Path) -> Path:
    return home_of(tmp_path) / "cache.sqlite3"


def script(fake: FakeLLM) -> None:
    """Two turns: code that greps and asks two sub-calls, then the answer from the variable."""
    fake.add_root(reply("Count them.", COUNT_AND_ASK), "FINAL_VAR(answer)")
    fake.sub = lambda prompt: "brute force from " + prompt[-12:]


def json_run(run_cli, fake: FakeLLM, path: str, extra=(), question="How many failed logins?") -> tuple:
    proc = run_cli(ask_args(fake, path, question=question, extra=["--json", *extra]))
    return proc, json.loads(proc.stdout.decode())


def test_the_same_question_twice_on_loghub_is_free_the_second_time(fake_llm, run_cli, shared_data, tmp_path):
    logs = str(shared_data / "loghub" / "OpenSSH")
    script(fake_llm)
    first, one = json_run(run_cli, fake_llm, logs, extra=["--trace", str(tmp_path / "one.jsonl")])
    assert first.returncode == 0, first.stderr.decode()
    made = len(fake_llm.requests)
    assert made == 4  # two root calls, two sub-calls
    assert one["cache"] == {"hits": 0, "misses": 4, "saved_tokens": 0, "saved_cost_usd": 0.0}

    second, two = json_run(run_cli, fake_llm, logs, extra=["--trace", str(tmp_path / "two.jsonl")])
    assert second.returncode == 0, second.stderr.decode()
    assert len(fake_llm.requests) == made  # not one request
    assert two["answer"] == one["answer"] and "failed logins; brute force from" in two["answer"]
    paid = one["usage"]["total_tokens"]
    saved_cost = pytest.approx(one["cost_usd"], abs=1e-6)
    assert two["cache"] == {"hits": 4, "misses": 0, "saved_tokens": paid, "saved_cost_usd": saved_cost}
    assert one["cost_usd"] > 0  # gpt-4o-mini has a price: the saving is real money
    assert two["usage"]["total_tokens"] == 0 and two["cost_usd"] == 0  # hits cost nothing
    assert two["subcalls"] == 0
    err = second.stderr.decode()
    assert f"cache: 4 calls served, {paid:,} tokens and $" in err  # the live view's summary line
    # The trace stays complete: every call has its ModelCall event, marked cached.
    calls = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    calls = [e for e in calls if e["event"] == "ModelCall"]
    assert [(e["role"], e["cached"]) for e in calls].count(("sub", True)) == 2
    assert [(e["role"], e["cached"]) for e in calls].count(("root", True)) == 2
    # ... and the history keeps what was saved.
    logs_json = json.loads(run_cli(["logs", "--json"]).stdout)
    newest = logs_json[0]
    assert (newest["cache_hits"], newest["cache_saved_tokens"]) == (4, paid)
    shown = run_cli(["logs", "show", "last"]).stdout.decode()
    assert f"cache:       4 calls served, {paid:,} tokens" in shown


def test_hits_cost_nothing_against_the_limits(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("Failed password x\nFailed password y\n" * 50)
    script(fake_llm)
    first, _ = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"), extra=["--max-tokens", "100000"])
    assert first.returncode == 0, first.stderr.decode()
    # A token limit no real call fits in: the cached run still answers (what the turn line says is
    # left of the budget is not part of the key).
    second, two = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"), extra=["--max-tokens", "1"])
    assert second.returncode == 0, second.stderr.decode()
    assert two["cache"]["hits"] == 4 and two["usage"]["total_tokens"] == 0
    third, _ = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"), extra=["--max-tokens", "1", "--no-cache"])
    assert third.returncode == 3  # without the cache the same limit stops it


def test_cache_only_with_an_empty_cache_is_exit_4_in_one_line(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    fake_llm.add_root("FINAL(hello)")
    proc = run_cli(
        ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--cache-only"]), env={"OPENAI_API_KEY": ""}
    )
    assert proc.returncode == 4
    assert fake_llm.requests == []
    errors = [line for line in proc.stderr.decode().splitlines() if line.startswith("rlm: error")]
    assert len(errors) == 1, proc.stderr.decode()
    assert "--cache-only: no cached reply for a root call to openai/gpt-4o-mini" in errors[0]
    assert "rlm: hint" not in proc.stderr.decode()


def test_cache_only_with_a_warm_cache_makes_no_request_and_needs_no_key(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("Failed password a\nFailed password b\n")
    script(fake_llm)
    first, one = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"))
    assert first.returncode == 0, first.stderr.decode()
    made = len(fake_llm.requests)
    proc = run_cli(
        ask_args(
            fake_llm, str(tmp_path / "a.txt"), question="How many failed logins?", extra=["--cache-only"]
        ),
        env={"OPENAI_API_KEY": ""},
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == one["answer"] + "\n"
    assert len(fake_llm.requests) == made


def test_a_sub_call_missing_under_cache_only_ends_the_run_with_exit_4(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("Failed password a\nFailed password b\n")
    script(fake_llm)
    first, _ = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"))
    assert first.returncode == 0
    made = len(fake_llm.requests)
    # The same first root call (served), whose cell now asks a sub-call the cache never saw.
    fake_llm.sub = lambda prompt: "unused"
    (tmp_path / "a.txt").write_text("Failed password a\nFailed password b\n")  # unchanged input...
    with sqlite3.connect(cache_file(tmp_path)) as conn:  # ...but the sub-calls' entries are gone
        sub_keys = [k for (k, v) in conn.execute("SELECT key, value FROM calls") if "brute force" in v]
        conn.executemany("DELETE FROM calls WHERE key = ?", [(k,) for k in sub_keys])
    assert len(sub_keys) == 2
    proc, doc = json_run(run_cli, fake_llm, str(tmp_path / "a.txt"), extra=["--cache-only"])
    assert proc.returncode == 4, proc.stderr.decode()
    assert doc["exit_reason"] == "provider_error" and "no cached reply for a sub-call" in doc["error"]
    assert len(fake_llm.requests) == made


def test_no_cache_neither_reads_nor_writes(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    fake_llm.add_root("FINAL(one)", "FINAL(two)")
    for expected in ("one", "two"):
        proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--no-cache"]))
        assert (proc.returncode, proc.stdout.decode()) == (0, f"{expected}\n"), proc.stderr.decode()
    assert len(fake_llm.requests) == 2
    assert not cache_file(tmp_path).exists()
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"), extra=["--no-cache", "--cache-only"]))
    assert proc.returncode == 2 and b"contradict" in proc.stderr


def test_the_cache_file_is_private_and_holds_no_key(fake_llm, run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("Failed password a\nFailed password b\n")
    script(fake_llm)
    proc = run_cli(ask_args(fake_llm, str(tmp_path / "a.txt")))
    assert proc.returncode == 0, proc.stderr.decode()
    assert fake_llm.requests[0]["headers"]["authorization"] == f"Bearer {SENTINEL_KEY}"  # the key was used
    path = cache_file(tmp_path)
    files = [p for p in path.parent.iterdir() if p.name.startswith("cache.sqlite3")]
    assert path in files
    for file in files:  # the database, and its -wal / -shm while they exist
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
        assert SENTINEL_KEY.encode() not in file.read_bytes()
        assert b"SENTINEL" not in file.read_bytes()


def test_the_cache_follows_rlm_home_and_rlm_cache_reports_and_clears_it(fake_llm, run_cli, tmp_path):
    proc = run_cli(["cache", "path"])
    assert proc.stdout.decode().strip() == str(cache_file(tmp_path))
    proc = run_cli(["cache", "stats"])
    assert proc.returncode == 0 and "entries:  0" in proc.stdout.decode()
    (tmp_path / "a.txt").write_text("Failed password a\nFailed password b\n")
    script(fake_llm)
    assert run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"))).returncode == 0
    out = run_cli(["cache", "stats"]).stdout.decode()
    assert "entries:  4" in out and "of 1.0 GiB" in out
    proc = run_cli(["cache", "clear"])
    assert proc.returncode == 0 and "cleared 4 cached replies" in proc.stdout.decode()
    assert "entries:  0" in run_cli(["cache", "stats"]).stdout.decode()
    made = len(fake_llm.requests)
    fake_llm.add_root(reply("Count them.", COUNT_AND_ASK), "FINAL_VAR(answer)")
    assert run_cli(ask_args(fake_llm, str(tmp_path / "a.txt"))).returncode == 0
    assert len(fake_llm.requests) == made + 4  # cleared: paid again


def test_two_runs_in_parallel_share_the_cache(fake_llm, rlm_bin, tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"Failed password from host{i}\n" for i in range(40)))

    def root(body: dict) -> str:
        which = "alpha" if "alpha" in body["messages"][1]["content"] else "beta"
        if len(body["messages"]) == 2:
            return reply(
                "",
                f"out = llm_query_batched(['{which} ' + l for l in context.splitlines()])\nprint(len(out))",
            )
        return f"FINAL({which} done)"

    fake_llm.add_root(*[root] * 4)
    fake_llm.sub = lambda prompt: "seen " + prompt
    env = clean_env(tmp_path)

    def start(question: str):
        args = ask_args(fake_llm, "a.txt", question=question, extra=["--concurrency", "8"])
        return popen_rlm(rlm_bin, args, env, cwd=tmp_path)

    procs = [start("alpha?"), start("beta?")]
    outs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err), which in zip(procs, outs, ("alpha", "beta"), strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode() == f"{which} done\n"
    assert len(fake_llm.requests) == 2 * (2 + 40)
    path = cache_file(tmp_path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 2 * (2 + 40)
    # Every entry serves: both questions again, offline, in parallel.
    env = clean_env(tmp_path, OPENAI_API_KEY="")
    procs = [
        popen_rlm(rlm_bin, ask_args(fake_llm, "a.txt", question=q, extra=["--cache-only"]), env, cwd=tmp_path)
        for q in ("alpha?", "beta?")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.decode() for _, e in outs]
    assert len(fake_llm.requests) == 2 * (2 + 40)


def test_keys_cover_model_server_and_messages_never_the_key():
    messages = [{"role": "user", "content": "hi"}]
    base = call_key("sub", MODEL, "http://127.0.0.1:8000/v1", messages)
    assert base == call_key("sub", MODEL, "http://127.0.0.1:8000/v1/", messages)  # the same server
    assert base == call_key("sub", MODEL, "http://user:secret@127.0.0.1:8000/v1?key=x", messages)
    assert base != call_key("root", MODEL, "http://127.0.0.1:8000/v1", messages)
    assert base != call_key("sub", "openai/gpt-4o", "http://127.0.0.1:8000/v1", messages)
    assert base != call_key("sub", MODEL, "http://127.0.0.1:8001/v1", messages)
    assert base != call_key("sub", MODEL, "http://127.0.0.1:8000/v1", [{"role": "user", "content": "hi!"}])
    assert (
        endpoint_identity("http://user:secret@Example.COM:8000/v1/?api-key=s") == "http://example.com:8000/v1"
    )


def test_least_recently_used_entries_go_past_the_size_cap(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite3", max_bytes=3000)
    value = {"text": "x" * 800, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0}
    for key in ("a", "b", "c"):
        cache.put(key, value)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", value)  # over the cap: b, then c if needed, go
    kept = {k for k in "abcd" if cache.get(k) is not None}
    assert "a" in kept and "d" in kept and "b" not in kept
    assert cache.stats().bytes <= 3000


def test_an_interrupted_bench_resumes_without_paying_again(fake_llm, run_cli, tmp_path):
    from rlmcli import bench

    tasks = tmp_path / "sniah.jsonl"
    bench.write_jsonl(bench.generate("sniah", 2, 2048, 0), tasks)

    def solving(body: dict) -> str:
        code = "import re\nvalue = re.search(r'magic \\w+ for \\S+ is: (\\S+)\\.', context).group(1)\n"
        return reply("", code + "check = llm_query('Is this a magic number? ' + value)\nFINAL(value)")

    fake_llm.add_root(*[solving] * 4)
    out = tmp_path / "results.jsonl"
    args = ["bench", "run", str(tasks), "--model", MODEL, "--api-base", fake_llm.url, "--sandbox", "local",
            "--method", "rlm", "--out", str(out)]  # fmt: skip
    first = run_cli(args)
    assert first.returncode == 0, first.stderr.decode()
    made = len(fake_llm.requests)
    assert made == 4 and [json.loads(line)["score"] for line in out.read_text().splitlines()] == [1.0, 1.0]
    out.unlink()  # the rows' results were lost (the run was killed before writing them)
    again = run_cli(args)
    assert again.returncode == 0, again.stderr.decode()
    assert len(fake_llm.requests) == made  # every call of the rows came from the cache
    assert [json.loads(line)["score"] for line in out.read_text().splitlines()] == [1.0, 1.0]
    fake_llm.add_root(*[solving] * 4)
    out.unlink()
    assert run_cli([*args, "--no-cache"]).returncode == 0
    assert len(fake_llm.requests) == 2 * made


def test_the_size_cap_is_kept_across_replacements_and_clears(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite3", max_bytes=10_000)
    value = {"text": "y" * 900, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0}
    for round_ in range(3):  # the same keys again: replaced, not counted twice
        for n in range(8):
            cache.put(f"k{n}", value)
        assert cache.stats().entries == 8, round_
    for n in range(8, 40):
        cache.put(f"k{n}", value)
    stats = cache.stats()
    assert stats.bytes <= 10_000 and stats.entries >= 9
    assert cache.get("k39") is not None and cache.get("k0") is None
    assert cache.clear() == stats.entries and cache.stats().entries == 0
    cache.put("again", value)
    assert cache.stats().entries == 1


# -- what a lookup and a store cost between two model calls (issue 16: the gap between iterations) --

ROOT = ModelConfig("openai/gpt-4o-mini", "http://127.0.0.1:8000/v1/", max_reply_tokens=8192)


def reference_key(kind: str, model: str, api_base: str | None, messages: list[dict], params: dict) -> str:
    """The key as documented: the SHA-256 of the whole JSON document, encoded at once."""
    document = {
        "v": 1,
        "kind": kind,
        "model": model,
        "endpoint": endpoint_identity(api_base),
        "messages": [{"role": m.get("role"), "content": _stable(kind, m)} for m in messages],
        "params": params,
    }
    text = json.dumps(document, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def test_keys_are_those_of_earlier_versions_so_a_filled_cache_still_serves():
    # Computed with the whole-document hash the cache shipped with (4f4513a).
    messages = [
        {"role": "system", "content": "You are the root. é"},
        {"role": "user", "content": "Turn 1 of 5. Budget left: 12 s.\nWhat is this?"},
        {"role": "assistant", "content": "```repl\nx = 1\n```"},
    ]
    assert call_key("root", ROOT.model, ROOT.api_base, messages, key_params(ROOT)) == (
        "5ba18f958b5b2c63ada50bdd10f677ce7087c0affbe2f8b2f98976b94ae1d645"
    )
    assert call_key("sub", ROOT.model, None, [{"role": "user", "content": "Summarise: x"}]) == (
        "fcf90a933ece6586392b52e241778a9a9cb92b90163880490f555a369635827f"
    )


def test_a_growing_conversation_keys_as_if_hashed_whole_each_time():
    """Keys resume from the messages hashed before: growing, changed in place (compaction), copied,
    interleaved with another conversation, with a non-str content; each must equal the whole hash."""
    params = {"max_reply_tokens": 8192}
    one = [
        {"role": "system", "content": 'sys "quoted" é \ud800'},
        {"role": "user", "content": "Turn 1 of 9. q1"},
    ]
    two = [
        {"role": "system", "content": 'sys "quoted" é \ud800'},
        {"role": "user", "content": "Turn 1 of 9. q2"},
    ]
    for i in range(40):
        for history in (one, two):
            for kind, base in (("root", "http://a/v1"), ("root", "http://b/v1"), ("sub", "http://a/v1")):
                expected = reference_key(kind, "m", base, history, params)
                assert call_key(kind, "m", base, history, params) == expected, (i, kind, base)
                assert call_key(kind, "m", base, history, params) == expected  # again: resumed in full
            history.append({"role": "assistant", "content": f"reply {i} 😀"})
            history.append({"role": "user", "content": f"Turn {i + 2} of 9. Budget left: {i} s.\nout {i}"})
        if i % 7 == 3:
            one[3] = {"role": "user", "content": f"compacted {i}"}  # an older message changed in place
        if i % 11 == 5:
            one[:] = [dict(m) for m in one]  # equal messages, new objects
        if i == 20:
            two.append({"role": "user", "content": [{"type": "text", "text": "a list"}]})
            two.append({"role": "assistant", "content": "after the list"})
    assert call_key("root", "m", "http://a/v1", one[:5], params) == reference_key(
        "root", "m", "http://a/v1", one[:5], params
    )


def test_a_stored_reply_serves_at_once_and_is_in_the_file_when_the_run_is_over(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "WRITE_DELAY_S", 3600.0)  # only the loop's end writes them
    cache = CallCache(tmp_path / "c.sqlite3")
    budget = Budget()

    async def run() -> list[str]:
        served = []
        for i in range(30):
            messages = [{"role": "user", "content": f"prompt {i}"}]
            assert await cache.lookup("sub", ROOT, messages, budget) is None
            await cache.store("sub", ROOT, messages, Completion(f"reply {i}", 3, 2, 0.001, 0.0))
            hit = await cache.lookup("sub", ROOT, messages, budget)  # before any drain has written it
            served.append(hit.text)
        return served

    assert asyncio.run(run()) == [f"reply {i}" for i in range(30)]
    assert (budget.usage.cache_hits, budget.usage.cache_misses) == (30, 30)
    # asyncio.run() has returned: every reply is in the file, for another run to read.
    with sqlite3.connect(tmp_path / "c.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 30
    again = CallCache(tmp_path / "c.sqlite3", only=True)
    hit = asyncio.run(again.lookup("sub", ROOT, [{"role": "user", "content": "prompt 7"}], Budget()))
    assert hit is not None and hit.text == "reply 7" and hit.cached


def test_the_size_cap_holds_after_many_stores_from_a_run(tmp_path):
    cap = 20_000
    cache = CallCache(tmp_path / "c.sqlite3", max_bytes=cap)

    async def run() -> None:
        for i in range(400):  # ~1 KB each: the cap is passed many times over, in batches
            messages = [{"role": "user", "content": f"prompt {i}"}]
            await cache.store("sub", ROOT, messages, Completion(f"{i} " + "z" * 1000, 3, 2, None, 0.0))
            if i % 50 == 0:
                await asyncio.sleep(0)

    asyncio.run(run())
    with sqlite3.connect(tmp_path / "c.sqlite3") as conn:
        total, entries = conn.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM calls").fetchone()
        counted = conn.execute("SELECT total FROM meta").fetchone()[0]
    assert counted == total  # the running total is the sum of the entries' sizes
    assert total <= cap and entries >= 10
    newest = asyncio.run(cache.lookup("sub", ROOT, [{"role": "user", "content": "prompt 399"}], Budget()))
    assert newest is not None  # the newest stay, the oldest went
    assert asyncio.run(cache.lookup("sub", ROOT, [{"role": "user", "content": "prompt 0"}], Budget())) is None


def test_a_hit_in_a_run_keeps_its_entry_from_eviction(tmp_path):
    cache = CallCache(tmp_path / "c.sqlite3", max_bytes=3000)
    for n in ("a", "b", "c"):
        key = call_key("sub", ROOT.model, ROOT.api_base, [{"role": "user", "content": n}], key_params(ROOT))
        cache.put(key, {"text": n * 700, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0})
    hit = asyncio.run(cache.lookup("sub", ROOT, [{"role": "user", "content": "a"}], Budget()))
    assert hit is not None  # its LRU time is written behind the run
    cache.put("d", {"text": "d" * 700, "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0})
    kept = [
        n for n in "abc" if asyncio.run(cache.lookup("sub", ROOT, [{"role": "user", "content": n}], Budget()))
    ]
    assert kept == ["a", "c"] and cache.stats().bytes <= 3000


def test_a_write_that_cannot_be_made_is_told_once_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "c.sqlite3"
    told: list[str] = []
    cache = CallCache(path, warn=told.append)
    budget = Budget()
    blocker = sqlite3.connect(path, isolation_level=None)  # another run holding the write lock
    blocker.execute("PRAGMA journal_mode=WAL")

    async def run() -> list:
        seen = [await cache.lookup("sub", ROOT, [{"role": "user", "content": "p0"}], budget)]
        blocker.execute("BEGIN IMMEDIATE")
        try:
            await cache.store(
                "sub", ROOT, [{"role": "user", "content": "p0"}], Completion("r", 1, 1, None, 0.0)
            )
            await asyncio.to_thread(cache.flush)  # the write waited 0.2 s for the lock, then failed
        finally:
            blocker.execute("ROLLBACK")
        for i in range(1, 3):
            seen.append(await cache.lookup("sub", ROOT, [{"role": "user", "content": f"p{i}"}], budget))
            await cache.store(
                "sub", ROOT, [{"role": "user", "content": f"p{i}"}], Completion("r", 1, 1, None, 0.0)
            )
        return seen

    assert asyncio.run(run()) == [None, None, None]
    blocker.close()
    assert len(told) == 1 and "cannot use the model-call cache" in told[0] and "locked" in told[0], told
    with sqlite3.connect(path) as conn:  # nothing half-written
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 0
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def rows_in(path: Path) -> int:
    """The entries another run sees in the file."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


async def until_written(path: Path, count: int) -> int:
    """Wait (the loop running) until the file holds `count` entries; give up after ~30 s."""
    for _ in range(3000):
        if path.exists() and rows_in(path) >= count:
            break
        await asyncio.sleep(0.01)
    return rows_in(path)


def test_a_long_run_writes_its_replies_for_other_runs_while_it_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "WRITE_DELAY_S", 0.05)
    path = tmp_path / "c.sqlite3"
    cache = CallCache(path)

    async def run() -> int:
        await cache.lookup("root", ROOT, [{"role": "user", "content": "q"}], Budget())
        await cache.store("root", ROOT, [{"role": "user", "content": "q"}], Completion("a", 1, 1, None, 0.0))
        return await until_written(path, 1)  # a cell that runs for a while: the reply is written meanwhile

    assert asyncio.run(run()) == 1


def test_a_batch_of_sub_call_replies_is_written_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "WRITE_DELAY_S", 3600.0)  # only the batch's size starts the write
    path = tmp_path / "c.sqlite3"
    cache = CallCache(path)

    async def run() -> int:
        await cache.lookup("sub", ROOT, [{"role": "user", "content": "first"}], Budget())
        for i in range(cache_module.WRITE_BATCH):
            messages = [{"role": "user", "content": f"piece {i}"}]
            await cache.store("sub", ROOT, messages, Completion(f"r{i}", 1, 1, None, 0.0))
        return await until_written(path, cache_module.WRITE_BATCH)

    assert asyncio.run(run()) == cache_module.WRITE_BATCH
