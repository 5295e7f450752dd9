"""A look before paying (`rlm files`, `rlm ask --dry-run`: cli/files.py, preview.py), the
confirmation of a large load, and loading progress with Ctrl-C (real processes where the terminal
or the signal is the point)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MODEL, STARTED, ask_args, clean_env, popen_rlm
from fake_llm import reply

from rlmcli import tokens


def test_dry_run_on_loghub_lists_tokens_and_a_cost_and_calls_nothing(fake_llm, run_cli, shared_data):
    proc = run_cli(ask_args(fake_llm, str(shared_data / "loghub"), extra=["--dry-run", "-n", "5"]))
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    rows = [line for line in out.splitlines() if "/loghub/" in line]
    assert len(rows) == 5  # -n 5, largest first
    counts = [int(row.split()[-4].replace(",", "")) for row in rows]  # tokens, bytes (2 words), path
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    assert "more files (-n 50 lists them all)" in out
    assert "total: 50 files" in out
    assert f"estimated cost (root {MODEL}, sub {MODEL}): $" in out
    assert "assumes sub-calls read the whole input" in out
    assert fake_llm.requests == []  # no model call, not even the first root turn


def test_dry_run_json_parses_and_adds_up(fake_llm, run_cli, shared_data):
    proc = run_cli(ask_args(fake_llm, str(shared_data / "loghub"), extra=["--dry-run", "--json"]))
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    files, totals, cost = doc["files"], doc["totals"], doc["cost_usd"]
    assert len(files) == totals["files"] == 50
    assert [f["tokens"] for f in files] == sorted((f["tokens"] for f in files), reverse=True)
    assert sum(f["bytes"] for f in files) == totals["bytes"]
    # Shares of the (sampled) total by characters; the `==> path <==` headers make the rest.
    assert 0.99 * totals["tokens"] <= sum(f["tokens"] for f in files) <= totals["tokens"]
    assert 0 < cost["low"] < cost["high"] and cost["unpriced"] == []
    assert fake_llm.requests == []


def plant(tmp_path: Path) -> Path:
    tree = tmp_path / "proj"
    (tree / "src").mkdir(parents=True)
    (tree / "src" / "main.py").write_text("def main():\n    print('hello, world')\n" * 40)
    (tree / "README.md").write_text("# proj\n\nA small project.\n")
    (tree / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    (tree / ".env").write_text("DEBUG=1\n")
    return tree


def test_files_counts_each_small_file_exactly_and_says_what_it_skipped(run_cli, tmp_path):
    tree = plant(tmp_path)
    proc = run_cli(["files", "proj", "--model", MODEL, "--json"])
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    names = ("src/main.py", "README.md")
    expected = {f"proj/{name}": tokens.count_text((tree / name).read_text()).tokens for name in names}
    assert {f["path"]: f["tokens"] for f in doc["files"]} == expected
    assert doc["files"][0]["path"] == "proj/src/main.py" and doc["totals"]["tokens_estimated"] is False
    assert doc["skipped"] == {"hidden": ["proj/.env"], "binary": ["proj/logo.png"]}
    text = run_cli(["files", "proj", "--model", MODEL, "-n", "1"]).stdout.decode()
    assert f"{expected['proj/src/main.py']:,}" in text and "proj/README.md" not in text
    assert "1 more files (-n 2 lists them all)" in text
    assert "skipped hidden: 1 — proj/.env" in text and "skipped binary: 1 — proj/logo.png" in text


def test_a_model_without_a_price_gets_an_unknown_cost(run_cli, tmp_path):
    plant(tmp_path)
    proc = run_cli(["files", "proj", "--model", "openai/my-local-model"])
    assert proc.returncode == 0, proc.stderr.decode()
    assert "unknown — no price in litellm's table for openai/my-local-model" in proc.stdout.decode()


def test_a_large_load_off_a_terminal_goes_on_and_says_so(fake_llm, run_cli, tmp_path):
    plant(tmp_path)
    (tmp_path / "config.toml").write_text("confirm-tokens = 10\n")
    fake_llm.add_root(reply("", "FINAL('ok')"))
    proc = run_cli(ask_args(fake_llm, "proj"), env={"RLM_CONFIG": str(tmp_path / "config.toml")})
    assert proc.returncode == 0, proc.stderr.decode()
    assert "above confirm-tokens (10); going on without asking (not a terminal" in proc.stderr.decode()
    assert proc.stdout.decode().startswith("ok")


def _read_until(fd: int, marker: bytes, seconds: float = 60) -> bytes:
    seen, deadline = b"", time.monotonic() + seconds
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


@pytest.mark.parametrize("answer", [b"n", b"y"])
def test_a_large_load_on_a_terminal_asks_first(fake_llm, rlm_bin, tmp_path, answer):
    plant(tmp_path)
    (tmp_path / "config.toml").write_text("confirm-tokens = 10\n")
    fake_llm.add_root(reply("", "FINAL('ok')"))
    env = clean_env(tmp_path, RLM_CONFIG=str(tmp_path / "config.toml"))
    controller, terminal = pty.openpty()  # stdin and stderr (where the question goes) on a terminal
    args = [rlm_bin, *ask_args(fake_llm, "proj")]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(args, stdin=terminal, stdout=pipe, stderr=terminal, cwd=tmp_path, env=env)
    STARTED.append(proc.pid)
    try:
        seen = _read_until(controller, b"Go on?")
        assert b"above confirm-tokens (10). Go on?" in seen, seen
        os.write(controller, answer + b"\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        os.close(controller)
        os.close(terminal)
    if answer == b"n":
        assert proc.returncode == 130 and fake_llm.requests == []
    else:
        assert proc.returncode == 0 and out.decode().strip() == "ok"


def test_yes_skips_the_question(fake_llm, rlm_bin, tmp_path):
    plant(tmp_path)
    (tmp_path / "config.toml").write_text("confirm-tokens = 10\n")
    fake_llm.add_root(reply("", "FINAL('ok')"))
    env = clean_env(tmp_path, RLM_CONFIG=str(tmp_path / "config.toml"))
    controller, terminal = pty.openpty()
    proc = popen_rlm(rlm_bin, ask_args(fake_llm, "proj", extra=["--yes"]), env, stdin=terminal, cwd=tmp_path)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        os.close(controller)
        os.close(terminal)
    assert proc.returncode == 0 and out.decode().startswith("ok")
    assert b"Go on?" not in err and b"confirm-tokens" not in err


def test_loading_shows_progress_and_ctrl_c_stops_it_with_130(fake_llm, rlm_bin, tmp_path):
    """The input comes down a pipe this test holds open: the load is still going when Ctrl-C
    arrives, however fast the machine (a tree of 285 MB could be read whole before the signal)."""
    env = clean_env(tmp_path, TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    proc = popen_rlm(rlm_bin, ask_args(fake_llm, "-"), env, cwd=tmp_path, stdin=subprocess.PIPE)
    chunk = b"2026-01-01 12:00:00 INFO worker-7 processed request id=1234567 in 12 ms\n" * 14_000  # ~1 MB
    seen = b""
    try:
        while b"rlm: loading: " not in seen and len(seen) < 100_000 and proc.poll() is None:
            proc.stdin.write(chunk)  # a chunk at a time: the progress line comes with a read
            proc.stdin.flush()
            seen += _read_until(proc.stderr.fileno(), b"rlm: loading: ", seconds=0.2)
        assert b"rlm: loading: " in seen, seen  # a plain line: stderr is not a terminal
        proc.send_signal(signal.SIGINT)  # the pipe is still open: rlm waits on it, mid-load
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (seen + err).decode()
    assert b"interrupted" in seen + err
    assert fake_llm.requests == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the half-written copy is gone
