"""Hostile or broken surroundings while loading and recording: names that are not UTF-8, a full
disk, a pathological ignore pattern, absurd usage numbers. Each ends in the documented outcome
(an answer, or exit 2 with a clear line), never exit 1 "this is a bug" or a hang."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import MODEL, SENTINEL_KEY, ask_args, clean_env
from fake_llm import reply
from typer.testing import CliRunner

from rlmcli.cli.app import app
from rlmcli.context import LoadOptions, load_context, write_error
from rlmcli.events import RunFinished, RunStarted
from rlmcli.record.history import DB_NAME, History
from rlmcli.record.trace import read_trace

LISTING = 'FINAL(" | ".join(k + "=" + str(files[k]).strip() for k in sorted(files)))'


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """invoke(args, input=None) -> click Result of `rlm ...` in this process, with a clean env."""
    for name in [k for k in os.environ if k.startswith("RLM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    env = {
        "OPENAI_API_KEY": SENTINEL_KEY,
        "RLM_CONFIG": str(tmp_path / "no-config.toml"),
        "RLM_HOME": str(tmp_path / "home"),
        "NO_COLOR": "1",
    }

    def invoke(args: list[str], input: bytes | None = None):
        return CliRunner().invoke(app, args, input=input, env=env)

    return invoke


def history(tmp_path: Path) -> History:
    return History(tmp_path / "home" / DB_NAME)


# -- H12: names that are not UTF-8 --------------------------------------------------------------


def make_latin1_tree(root: Path) -> None:
    """d/caf\\xe9.txt (Latin-1 bytes, not UTF-8) and d/ok.txt, made through bytes paths."""
    d = os.fsencode(root / "d")
    os.mkdir(d)
    with open(os.path.join(d, b"caf\xe9.txt"), "wb") as f:
        f.write(b"bonjour\n")
    with open(os.path.join(d, b"ok.txt"), "wb") as f:
        f.write(b"fine\n")


def test_a_name_that_is_not_utf8_loads_and_shows_escaped(cli, fake_llm, tmp_path):
    make_latin1_tree(tmp_path)
    fake_llm.add_root(reply("Listing.", LISTING))
    result = cli([*ask_args(fake_llm, "d"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # The model's `files` has the file under its escaped name, with its text.
    assert out["answer"] == "d/caf\\xe9.txt=bonjour | d/ok.txt=fine"
    assert out["context"]["files"] == 2
    # The root prompt lists it escaped too.
    assert "d/caf\\\\xe9.txt" in json.dumps(fake_llm.root_requests[0]["body"], ensure_ascii=False)
    # The trace (readable JSON) and the history name it the same way.
    record = history(tmp_path).get("last")
    assert record.exit_reason == "final"
    loaded = [e for e in read_trace(record.trace_path) if e.name == "ContextLoaded"][0]
    assert [s[0] for s in loaded.sources] == ["d/caf\\xe9.txt", "d/ok.txt"]


def test_a_path_argument_and_question_that_are_not_utf8(cli, fake_llm, tmp_path):
    make_latin1_tree(tmp_path)
    named = os.fsdecode(os.path.join(b"d", b"caf\xe9.txt"))  # what argv holds: a lone surrogate
    question = os.fsdecode(b"what is in caf\xe9?")
    fake_llm.add_root(reply("", "FINAL(context.strip())"))
    result = cli(ask_args(fake_llm, named, question=question))
    assert result.exit_code == 0, result.output
    assert result.stdout == "bonjour\n"
    record = history(tmp_path).get("last")
    assert record.inputs == ["d/caf\\xe9.txt"] and record.question == "what is in caf\\xe9?"


def test_a_missing_path_that_is_not_utf8_is_a_usage_error(cli, fake_llm, tmp_path):
    result = cli(ask_args(fake_llm, os.fsdecode(b"nope\xff.txt")))
    assert result.exit_code == 2, result.output
    assert "no such file or directory: nope\\xff.txt" in result.stderr


# -- H13: a full disk ----------------------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MB tmpfs, as TMPDIR for a run: the copy of a 5 MB stdin cannot fit."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        if os.geteuid() == 0:
            pytest.fail(f"root could not mount a tmpfs: {done.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_while_copying_stdin_is_exit_2_with_the_path(run_rlm, fake_llm, tiny_tmpfs, tmp_path):
    proc = run_rlm(
        ask_args(fake_llm, "-"), input=b"a line of log\n" * 400_000, env={"TMPDIR": str(tiny_tmpfs)}
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"rlm: error: no space left on device writing {tiny_tmpfs}/rlm-run-" in err
    assert "context.txt" in err and "bug" not in err
    assert "rlm: hint: free some space, or set TMPDIR" in err
    assert list(tiny_tmpfs.iterdir()) == []  # the partial copy and its temp dir are gone
    assert fake_llm.requests == []


def test_a_file_size_limit_while_copying_stdin_is_exit_2(rlm_bin, fake_llm, tmp_path):
    """EFBIG: RLIMIT_FSIZE below the copy's size (Python ignores SIGXFSZ, so the write fails)."""
    limit = 1024 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [rlm_bin, *ask_args(fake_llm, "-")], input=b"a line of log\n" * 400_000, capture_output=True,
        env=clean_env(tmp_path), preexec_fn=small_files, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "rlm: error: file too large for the file system writing " in err and "context.txt" in err


def test_a_full_disk_under_a_directory_copy(tmp_path):
    """ENOSPC from the kernel for real (/dev/full), in-process: InputError naming the path."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("x" * 100_000)
    work = tmp_path / "work"
    work.mkdir()
    (work / "context.txt").symlink_to("/dev/full")
    with pytest.raises(Exception) as caught:
        load_context([str(tmp_path / "src")], work, LoadOptions())
    assert type(caught.value).__name__ == "InputError" and caught.value.exit_status == 2
    assert str(caught.value) == f"no space left on device writing {work / 'context.txt'}"


@pytest.mark.parametrize(
    ("code", "said"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EFBIG, "file too large for the file system"),
        (errno.EIO, "input/output error"),
    ],
)
def test_write_errors_say_why_and_where(code, said):
    error = write_error(Path("/tmp/rlm-run-x/share/context.txt"), OSError(code, os.strerror(code)))
    assert str(error) == f"{said} writing /tmp/rlm-run-x/share/context.txt"
    assert error.exit_status == 2


# -- H14: a pathological ignore pattern ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_catastrophic_gitignore_pattern_does_not_hang_loading(tmp_path):
    """20 stars against 60-200 "a"s: Python's backtracking regex would take longer than the
    universe has left; loading must finish (pytest-timeout bounds the test) with git's answer."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".gitignore").write_text("a*" * 20 + "b\n")
    names = ["a" * 60, "a" * 200, "a" * 60 + "b", "x.txt"]
    for name in names:
        (root / name).write_text("text\n")
    context = load_context([str(root)], tmp_path / "work", LoadOptions())
    skipped = context.stats.skipped
    loaded = sorted(Path(f.path).name for f in context.files)
    assert loaded == sorted(["a" * 60, "a" * 200, "x.txt"])  # no b at the end: not ignored
    assert [Path(p).name for p in skipped["ignored"]] == ["a" * 60 + "b"]


def test_a_long_ignore_file_loads(tmp_path):
    """5,000 patterns, some wildcard-heavy: RE2's set matcher refuses a set this size ("failed to
    compile Set"), so patterns are matched one by one; loading must still apply every rule."""
    root = tmp_path / "repo"
    root.mkdir()
    lines = [f"gen{i}*.out*" for i in range(5000)] + ["keep*.txt*"]
    (root / ".gitignore").write_text("\n".join(lines) + "\n")
    for name in ("gen4999x.out", "gen12.outer", "keep.txt", "main.py"):
        (root / name).write_text("text\n")
    context = load_context([str(root)], tmp_path / "work", LoadOptions())
    assert sorted(Path(f.path).name for f in context.files) == ["main.py"]
    assert len(context.stats.skipped["ignored"]) == 3


@pytest.mark.timeout(60)
def test_a_catastrophic_exclude_glob_does_not_hang_either(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / ("a" * 100)).write_text("text\n")
    (root / ("a" * 20 + "b")).write_text("text\n")
    options = LoadOptions(exclude=["*a" * 15 + "b"])
    context = load_context([str(root)], tmp_path / "work", options)
    assert [Path(f.path).name for f in context.files] == ["a" * 100]
    assert [Path(p).name for p in context.stats.skipped["excluded"]] == ["a" * 20 + "b"]


# -- the history survives absurd numbers ---------------------------------------------------------


def test_the_history_records_absurd_usage_without_failing(tmp_path):
    warnings: list[str] = []
    store = History(tmp_path / DB_NAME)
    record = store.recorder(None, on_error=warnings.append)
    run = RunStarted("q", MODEL, MODEL, "local")
    record(run)
    absurd = RunFinished(
        "final", "ok", prompt_tokens=int(1e300), completion_tokens=10**30, cost_usd=float("nan"),
        elapsed_s=float("inf"), parent=run.id,
    )  # fmt: skip
    record(absurd)
    assert warnings == []
    row = store.get(run.id)
    assert row.exit_reason == "final" and row.answer == "ok"
    assert row.prompt_tokens == row.completion_tokens == 2**63 - 1  # clamped to what SQLite holds
    assert row.cost_usd is None and row.elapsed_s is None  # not a number: unknown


def test_a_recorder_failure_is_a_warning_never_the_end_of_the_run(tmp_path):
    warnings: list[str] = []
    store = History(tmp_path / DB_NAME)

    def broken(record) -> None:  # noqa: ANN001
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    store._write = broken  # type: ignore[method-assign]
    recorder = store.recorder(None, on_error=warnings.append)
    run = RunStarted("q", MODEL, MODEL, "local")
    recorder(run)
    recorder(RunFinished("final", "ok", parent=run.id))
    assert len(warnings) == 1 and "cannot record the run" in warnings[0]


def test_a_bug_mid_run_is_exit_1_and_the_history_row_is_finished(tmp_path, monkeypatch, fake_llm):
    """An unexpected exception after the run started still ends its record: the row is not left
    `running`, and the trace ends with RunFinished."""
    import rlmcli.run
    from rlmcli.record.history import History

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rlmcli.run, "make_client", broken)
    home = tmp_path / "home"
    env = {"RLM_HOME": str(home), "RLM_CONFIG": str(tmp_path / "none.toml"), "OPENAI_API_KEY": "sk-x" * 4}
    (tmp_path / "in.txt").write_text("data\n")
    args = ["ask", str(tmp_path / "in.txt"), "q?", "--model", MODEL, "--api-base", fake_llm.url]
    result = CliRunner().invoke(app, [*args, "--sandbox", "local"], env=env)
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in result.stderr
    monkeypatch.setenv("RLM_HOME", str(home))
    row = History().get("last")
    assert row.exit_reason == "error"
    events = [json.loads(line)["event"] for line in open(row.trace_path)]
    assert events[0] == "RunStarted" and events[-1] == "RunFinished"
