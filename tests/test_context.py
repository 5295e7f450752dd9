"""Tests for rlmcli.context: real trees on disk under tmp_path."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

from rlmcli import context as ctxmod
from rlmcli.budget import estimate_tokens
from rlmcli.context import Context, LoadOptions, load_context, parse_size
from rlmcli.errors import InputError


def _permissions_bypassed() -> bool:
    """True when chmod 000 doesn't stop us reading (root with CAP_DAC_OVERRIDE)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_bytes()
            return True
        except PermissionError:
            return False


PERMISSIONS_BYPASSED = _permissions_bypassed()


def make_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_bytes(content.encode("utf-8"))
    return root


@pytest.fixture
def chdir_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from tmp_path so display paths are short and predictable ("repo/a.txt")."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load(paths: list[str], tmp_path: Path, stdin=None, **opts) -> Context:
    return load_context(paths, tmp_path / "work", LoadOptions(**opts), stdin=stdin)


def text_of(ctx: Context) -> str:
    with open(ctx.path, encoding="utf-8", newline="") as f:
        return f.read()


def names(ctx: Context) -> list[str]:
    return [f.path for f in ctx.files]


def check_offsets(ctx: Context, root: Path | None = None) -> None:
    """context[start:end] is exactly each file's decoded text."""
    text = text_of(ctx)
    for f in ctx.files:
        if f.path == "<stdin>":
            continue
        src = (root or Path.cwd()) / f.path
        assert text[f.start : f.end] == src.read_bytes().decode("utf-8", errors="replace"), f.path


# --- ignore rules ---------------------------------------------------------------------------------


def test_anchored_pattern_in_nested_gitignore(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {
            "build/a.txt": "top build\n",
            "sub/.gitignore": "/build/\n",
            "sub/build/b.txt": "ignored\n",
            "sub/deep/build/c.txt": "not anchored here\n",
            "sub/build.txt": "a file named like the dir\n",
        },
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/build/a.txt", "repo/sub/build.txt", "repo/sub/deep/build/c.txt"]
    assert ctx.stats.skipped["ignored"] == ["repo/sub/build/"]
    assert ctx.stats.skipped["hidden"] == ["repo/sub/.gitignore"]


def test_negation_reincludes(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".gitignore": "*.txt\n!keep.txt\n", "a.txt": "a", "keep.txt": "k", "x.md": "x"},
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/keep.txt", "repo/x.md"]
    assert ctx.stats.skipped["ignored"] == ["repo/a.txt"]


def test_deeper_gitignore_overrides_shallower(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {
            ".gitignore": "*.log\n",
            "a.log": "a",
            "sub/.gitignore": "!important.log\n",
            "sub/important.log": "i",
            "sub/other.log": "o",
        },
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/sub/important.log"]
    assert ctx.stats.skipped["ignored"] == ["repo/a.log", "repo/sub/other.log"]


def test_file_in_ignored_dir_cannot_be_reincluded(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".gitignore": "build/\n!build/keep.txt\n", "build/keep.txt": "k", "a.txt": "a"},
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt"]
    assert ctx.stats.skipped["ignored"] == ["repo/build/"]


def test_venv_gitignore_star_ignores_everything_inside(chdir_tmp: Path) -> None:
    files = {"venv/.gitignore": "*\n", "venv/lib/x.py": "x", "venv/pyvenv.cfg": "c", "app.py": "a"}
    make_tree(chdir_tmp / "repo", files)
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/app.py"]
    assert ctx.stats.skipped["ignored"] == ["repo/venv/.gitignore", "repo/venv/lib/", "repo/venv/pyvenv.cfg"]


def test_hidden_venv_with_hidden_flag_still_ignored_by_its_gitignore(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {".venv/.gitignore": "*\n", ".venv/lib/x.py": "x", "app.py": "a"})
    assert load(["repo"], chdir_tmp).stats.skipped == {"hidden": ["repo/.venv/"]}
    ctx = load(["repo"], chdir_tmp, hidden=True)
    assert names(ctx) == ["repo/app.py"]
    assert ctx.stats.skipped["ignored"] == ["repo/.venv/.gitignore", "repo/.venv/lib/"]


def test_git_info_exclude(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".git/info/exclude": "secret.txt\n", ".git/HEAD": "ref", "secret.txt": "s", "a.txt": "a"},
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt"]
    assert ctx.stats.skipped == {"ignored": ["repo/secret.txt"]}  # .git itself is skipped silently


def test_gitignore_overrides_info_exclude(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".git/info/exclude": "*.txt\n", ".gitignore": "!a.txt\n", "a.txt": "a", "b.txt": "b"},
    )
    assert names(load(["repo"], chdir_tmp)) == ["repo/a.txt"]


def test_ignore_and_rlmignore(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {
            ".ignore": "a.txt\n",
            "sub/.rlmignore": "b.txt\n",
            "a.txt": "a",
            "b.txt": "b at top is kept",
            "sub/a.txt": "a anywhere is ignored",
            "sub/b.txt": "b",
            "sub/c.txt": "c",
        },
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/b.txt", "repo/sub/c.txt"]
    assert ctx.stats.skipped["ignored"] == ["repo/a.txt", "repo/sub/a.txt", "repo/sub/b.txt"]


def test_rlmignore_overrides_gitignore_in_same_dir(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {".gitignore": "*.csv\n", ".rlmignore": "!data.csv\n", "data.csv": "d"})
    assert names(load(["repo"], chdir_tmp)) == ["repo/data.csv"]


def test_no_ignore(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".gitignore": "*.txt\n", ".git/info/exclude": "*.md\n", "a.txt": "a", "b.md": "b"},
    )
    with pytest.raises(InputError, match=r"no files to read in repo/ \(3 skipped: 2 ignored, 1 hidden\)"):
        load(["repo"], chdir_tmp)
    ctx = load(["repo"], chdir_tmp, no_ignore=True)
    assert names(ctx) == ["repo/a.txt", "repo/b.md"]
    assert ctx.stats.skipped == {"hidden": ["repo/.gitignore"]}


# --- hidden, binary, symlinks, special, unreadable ----------------------------------------------


def test_hidden_skipped_and_included_but_never_dot_git(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {".env": "E=1", ".config/x.toml": "x", ".git/config": "[core]", "a.txt": "a"},
    )
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt"]
    assert ctx.stats.skipped == {"hidden": ["repo/.config/", "repo/.env"]}
    ctx = load(["repo"], chdir_tmp, hidden=True)
    assert names(ctx) == ["repo/.config/x.toml", "repo/.env", "repo/a.txt"]
    assert ctx.stats.skipped == {}


def test_binary_skipped_in_directory(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {"img.png": b"\x89PNG\r\n\x00\x00data", "late.bin": b"a" * 9000 + b"\x00", "a.txt": "a"},
    )
    ctx = load(["repo"], chdir_tmp)
    # A NUL only beyond the first 8 KiB doesn't make a file binary.
    assert names(ctx) == ["repo/a.txt", "repo/late.bin"]
    assert ctx.stats.skipped == {"binary": ["repo/img.png"]}


def test_explicit_binary_file_is_an_error(chdir_tmp: Path) -> None:
    (chdir_tmp / "x.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError, match="x.bin is a binary file") as exc:
        load(["x.bin"], chdir_tmp)
    assert exc.value.hint
    assert not (chdir_tmp / "work" / "context.txt").exists()  # no half-written context left


def test_invalid_utf8_replaced_and_counted(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"bad.txt": b"ok \xff\xfe end\n", "bad2.txt": b"\xc3", "good.txt": "ok"})
    ctx = load(["repo"], chdir_tmp)
    assert ctx.stats.invalid_utf8_files == 2
    spans = ctx.spans()
    text = text_of(ctx)
    assert text[slice(*spans["repo/bad.txt"])] == "ok \ufffd\ufffd end\n"
    assert text[slice(*spans["repo/bad2.txt"])] == "\ufffd"  # truncated sequence at EOF is flushed
    check_offsets(ctx)


def test_invalid_utf8_split_across_chunks(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A multi-byte character cut by a chunk boundary is decoded intact, not replaced."""
    monkeypatch.setattr(ctxmod, "CHUNK", 3)
    (chdir_tmp / "a.txt").write_bytes("aé€😀b\r\n".encode())
    ctx = load(["a.txt"], chdir_tmp)
    assert text_of(ctx) == "aé€😀b\r\n"
    assert ctx.stats.invalid_utf8_files == 0


def test_symlink_loop_and_symlinked_file_skipped(chdir_tmp: Path) -> None:
    repo = make_tree(chdir_tmp / "repo", {"a.txt": "a", "d/b.txt": "b"})
    os.symlink(".", repo / "d" / "loop")
    os.symlink("a.txt", repo / "link.txt")
    os.symlink("/nonexistent/target", repo / "dangling")
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt", "repo/d/b.txt"]
    assert ctx.stats.skipped == {"symlink": ["repo/d/loop", "repo/dangling", "repo/link.txt"]}


def test_explicit_symlink_is_followed(chdir_tmp: Path) -> None:
    (chdir_tmp / "a.txt").write_text("hello")
    os.symlink("a.txt", chdir_tmp / "link.txt")
    ctx = load(["link.txt"], chdir_tmp)
    assert text_of(ctx) == "hello" and names(ctx) == ["link.txt"]


def test_fifo_in_directory_skipped_without_blocking(chdir_tmp: Path) -> None:
    repo = make_tree(chdir_tmp / "repo", {"a.txt": "a"})
    os.mkfifo(repo / "pipe")
    result: list[Context] = []
    t = threading.Thread(target=lambda: result.append(load(["repo"], chdir_tmp)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "loading a directory with a FIFO blocked"
    assert names(result[0]) == ["repo/a.txt"]
    assert result[0].stats.skipped == {"special": ["repo/pipe"]}


def test_explicit_fifo_is_an_error(chdir_tmp: Path) -> None:
    os.mkfifo(chdir_tmp / "pipe")
    with pytest.raises(InputError, match="pipe is not a regular file") as exc:
        load(["pipe"], chdir_tmp)
    assert "stdin" in (exc.value.hint or "")


UNREADABLE_PROBE = """
import json, sys
from pathlib import Path
from rlmcli.context import LoadOptions, load_context
from rlmcli.errors import InputError
ctx = load_context(["repo"], Path(sys.argv[1]), LoadOptions())
try:
    load_context(["repo/secret.txt"], Path(sys.argv[1]) / "w2", LoadOptions())
    error = None
except InputError as e:
    error = str(e)
print(json.dumps({"files": [f.path for f in ctx.files], "skipped": ctx.stats.skipped, "error": error}))
"""


def test_unreadable_by_permissions(chdir_tmp: Path) -> None:
    """Real permissions, not a monkeypatch: as root, the capability that bypasses them is dropped."""
    repo = make_tree(chdir_tmp / "repo", {"a.txt": "a", "secret.txt": "s", "locked/x.txt": "x"})
    (repo / "secret.txt").chmod(0)
    (repo / "locked").chmod(0)
    command = [sys.executable, "-c", UNREADABLE_PROBE, str(chdir_tmp / "work")]
    if PERMISSIONS_BYPASSED:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run(command, capture_output=True, text=True, cwd=chdir_tmp, env=env, timeout=60)
    finally:
        (repo / "locked").chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["files"] == ["repo/a.txt"]
    assert result["skipped"] == {"unreadable": ["repo/locked/", "repo/secret.txt"]}
    assert "cannot read repo/secret.txt: permission denied" in result["error"]


def deny(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make os.open / os.scandir raise PermissionError for paths ending in `name` (works as root)."""
    real_open, real_scandir = os.open, os.scandir

    def fake_open(path, flags, *args, **kwargs):
        if str(path).endswith(name):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_scandir(path="."):
        if str(path).endswith(name):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(ctxmod.os, "open", fake_open)
    monkeypatch.setattr(ctxmod.os, "scandir", fake_scandir)


def test_unreadable_file_in_directory_skipped(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a", "secret.txt": "s"})
    deny(monkeypatch, "secret.txt")
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt"]
    assert ctx.stats.skipped == {"unreadable": ["repo/secret.txt"]}


def test_unreadable_dir_in_directory_skipped(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a", "locked/x.txt": "x"})
    deny(monkeypatch, "locked")
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt"]
    assert ctx.stats.skipped == {"unreadable": ["repo/locked/"]}


def test_unreadable_explicit_file_is_an_error(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (chdir_tmp / "secret.txt").write_text("s")
    deny(monkeypatch, "secret.txt")
    with pytest.raises(InputError, match="cannot read secret.txt: permission denied"):
        load(["secret.txt"], chdir_tmp)


def test_unreadable_directory_argument_is_an_error(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a"})
    deny(monkeypatch, "repo")
    with pytest.raises(InputError, match="cannot read directory repo/"):
        load(["repo"], chdir_tmp)


# --- empty / missing ------------------------------------------------------------------------------


def test_empty_directory_is_an_error(chdir_tmp: Path) -> None:
    (chdir_tmp / "empty").mkdir()
    with pytest.raises(InputError, match=r"^no files to read in empty/$"):
        load(["empty"], chdir_tmp)


def test_directory_with_only_ignored_files_is_an_error(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {".gitignore": "*.log\n", "a.log": "a", "b.log": "b", "c.bin": b"\0"})
    with pytest.raises(InputError) as exc:
        load(["repo/"], chdir_tmp)
    assert str(exc.value) == "no files to read in repo/ (4 skipped: 2 ignored, 1 binary, 1 hidden)"
    assert exc.value.hint == "try --no-ignore, --hidden or --include"


def test_empty_file_in_directory_is_fine(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"empty.txt": "", "a.txt": "a"})
    ctx = load(["repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt", "repo/empty.txt"]
    e = ctx.files[1]
    assert (e.start, e.end, e.lines, e.bytes) == (e.start, e.start, 0, 0)
    check_offsets(ctx)


def test_missing_path_is_an_error(chdir_tmp: Path) -> None:
    with pytest.raises(InputError, match="no such file or directory: nope.txt"):
        load(["nope.txt"], chdir_tmp)


def test_missing_path_fails_before_reading_stdin(chdir_tmp: Path) -> None:
    stdin = io.BytesIO(b"data")
    with pytest.raises(InputError, match="no such file"):
        load(["-", "nope"], chdir_tmp, stdin=stdin)
    assert stdin.tell() == 0


# --- size limits, include/exclude -----------------------------------------------------------------


def test_max_file_size_in_directory_but_explicit_file_bypasses(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"big.txt": "x" * 2000, "small.txt": "s"})
    ctx = load(["repo"], chdir_tmp, max_file_size=1000)
    assert names(ctx) == ["repo/small.txt"]
    assert ctx.stats.skipped == {"too-large": ["repo/big.txt"]}
    ctx = load(["repo/big.txt"], chdir_tmp, max_file_size=1000)
    assert ctx.stats.chars == 2000 and ctx.kind == "file"


def test_include_and_exclude(chdir_tmp: Path) -> None:
    make_tree(
        chdir_tmp / "repo",
        {
            "src/a.py": "a",
            "src/b.txt": "b",
            "src/gen/c.py": "c",
            "tests/t.py": "t",
            "README.md": "r",
        },
    )
    ctx = load(["repo"], chdir_tmp, include=["*.py"])
    assert names(ctx) == ["repo/src/a.py", "repo/src/gen/c.py", "repo/tests/t.py"]
    assert ctx.stats.skipped == {"excluded": ["repo/README.md", "repo/src/b.txt"]}

    ctx = load(["repo"], chdir_tmp, include=["*.py"], exclude=["gen/", "/tests"])
    assert names(ctx) == ["repo/src/a.py"]
    assert ctx.stats.skipped["excluded"] == [
        "repo/README.md",
        "repo/src/b.txt",
        "repo/src/gen/",
        "repo/tests/",
    ]

    ctx = load(["repo"], chdir_tmp, include=["src/"])  # a directory pattern includes what's inside
    assert names(ctx) == ["repo/src/a.py", "repo/src/b.txt", "repo/src/gen/c.py"]


def test_explicit_file_bypasses_filters(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp, {".gitignore": "*.log\n", ".hidden.log": "h"})
    ctx = load([".hidden.log"], chdir_tmp, exclude=["*.log"], include=["*.py"])
    assert text_of(ctx) == "h"


# --- stdin ----------------------------------------------------------------------------------------


def test_stdin_from_bytesio(tmp_path: Path) -> None:
    ctx = load(["-"], tmp_path, stdin=io.BytesIO("line 1\r\nlíne 2".encode()))
    assert ctx.kind == "stdin"
    assert text_of(ctx) == "line 1\r\nlíne 2"  # no header for a single input
    assert ctx.files[0].path == "<stdin>" and ctx.files[0].lines == 2
    assert ctx.stats.bytes == len("line 1\r\nlíne 2".encode()) and ctx.stats.chars == 14


class FakeTTY(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_stdin_tty_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="terminal") as exc:
        load(["-"], tmp_path, stdin=FakeTTY(b"never read"))
    assert "cat app.log | rlm ask -" in (exc.value.hint or "")


def test_empty_stdin_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="stdin was empty"):
        load(["-"], tmp_path, stdin=io.BytesIO(b""))


def test_stdin_only_once(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="only once"):
        load(["-", "-"], tmp_path, stdin=io.BytesIO(b"x"))


def test_no_paths_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load([], tmp_path)


# --- layout, offsets, stats -----------------------------------------------------------------------


def test_offsets_invariant_with_multibyte_and_crlf(chdir_tmp: Path) -> None:
    files: dict[str, str | bytes] = {
        "a.txt": "plain\n",
        "b.txt": "naïve café — 日本語 😀\r\nsecond line\r\n",
        "c.txt": "no trailing newline ✓",
        "d/e.txt": "\r\n\r\n",
        "d/f.txt": "x\ry\rz",
    }
    make_tree(chdir_tmp / "repo", files)
    (chdir_tmp / "solo.txt").write_bytes("😀 solo\r\n".encode())
    ctx = load(["repo", "solo.txt", "-"], chdir_tmp, stdin=io.BytesIO("ünï\r\n".encode()))
    assert ctx.kind == "multiple"
    assert names(ctx) == ["repo/a.txt", "repo/b.txt", "repo/c.txt", "repo/d/e.txt", "repo/d/f.txt"] + [
        "solo.txt",
        "<stdin>",
    ]
    text = text_of(ctx)
    check_offsets(ctx)
    assert text[slice(*ctx.spans()["<stdin>"])] == "ünï\r\n"
    # Headers precede each file; a newline is added only after text lacking one.
    assert text.startswith("==> repo/a.txt <==\nplain\n==> repo/b.txt <==\nnaïve")
    assert "no trailing newline ✓\n==> repo/d/e.txt <==\n\r\n\r\n==> repo/d/f.txt <==\nx\ry\rz\n" in text
    assert text.endswith("==> <stdin> <==\nünï\r\n")
    assert ctx.stats.chars == len(text)
    by = {f.path: f for f in ctx.files}
    assert by["repo/b.txt"].lines == 2 and by["repo/c.txt"].lines == 1 and by["repo/d/f.txt"].lines == 1
    assert by["repo/b.txt"].bytes == len(files["b.txt"].encode())  # type: ignore[union-attr]
    assert ctx.stats.bytes == sum(f.bytes for f in ctx.files)
    assert ctx.stats.est_tokens == estimate_tokens(text)


def test_single_file_has_no_header(chdir_tmp: Path) -> None:
    (chdir_tmp / "a.txt").write_bytes("é\r\n".encode())
    ctx = load(["a.txt"], chdir_tmp)
    assert ctx.kind == "file" and text_of(ctx) == "é\r\n"
    assert (ctx.files[0].start, ctx.files[0].end, ctx.files[0].bytes) == (0, 3, 4)


def test_single_directory_with_one_file_has_header(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a"})
    ctx = load(["repo"], chdir_tmp)
    assert ctx.kind == "directory" and text_of(ctx) == "==> repo/a.txt <==\na\n"


def test_display_paths_keep_the_argument_as_given(chdir_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a", "d/b.txt": "b"})
    assert names(load(["repo/"], chdir_tmp)) == ["repo/a.txt", "repo/d/b.txt"]
    assert names(load([str(chdir_tmp / "repo")], chdir_tmp))[0] == f"{chdir_tmp}/repo/a.txt"
    monkeypatch.chdir(chdir_tmp / "repo")
    assert names(load(["."], chdir_tmp)) == ["./a.txt", "./d/b.txt"]


def test_deterministic_sorted_order(chdir_tmp: Path) -> None:
    tree = {f"{d}/{n}.txt": f"{d}{n}" for d in ("b", "a", "c", "B") for n in ("z", "y", "10", "2")}
    tree["m.txt"] = "m"
    make_tree(chdir_tmp / "repo", tree)
    first = load(["repo"], chdir_tmp)
    second = load(["repo"], chdir_tmp)
    assert names(first) == names(second) == sorted(names(first))
    assert text_of(first) == text_of(second)


def test_same_file_twice_loaded_once(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a", "b.txt": "b"})
    ctx = load(["repo/a.txt", "repo"], chdir_tmp)
    assert names(ctx) == ["repo/a.txt", "repo/b.txt"]


def test_workdir_inside_the_tree_is_not_read_into_itself(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "a"})
    ctx = load_context(["repo"], chdir_tmp / "repo" / "work", LoadOptions())
    assert names(ctx) == ["repo/a.txt"]


def test_prefix_index_and_summary(chdir_tmp: Path) -> None:
    make_tree(chdir_tmp / "repo", {"a.txt": "é" * 1500, "b.txt": "line\n" * 3, ".h": "h", "z.bin": b"\0"})
    ctx = load(["repo"], chdir_tmp)
    text = text_of(ctx)
    assert ctx.prefix == text[: ctxmod.PREFIX_CHARS] and len(ctx.prefix) == ctxmod.PREFIX_CHARS == 500

    index_path = chdir_tmp / "index.json"
    ctx.write_index(index_path)
    index = json.loads(index_path.read_text(encoding="utf-8"))
    files = {k: list(v) for k, v in ctx.spans().items()}
    assert index == {"files": files, "chars_per_token": round(len(text) / ctx.stats.est_tokens, 4)}

    # o200k_base gives "é" repeated about a token each: 1,521 tokens for 1,554 characters.
    assert ctx.stats.bytes == 3015 and ctx.stats.est_tokens == estimate_tokens(text) == 1521
    assert ctx.summary() == "context: 2 files, 2.9 KB, 4 lines, ~2k tokens; skipped 2 (1 binary, 1 hidden)"


def test_summary_formatting(tmp_path: Path) -> None:
    stats = ctxmod.ContextStats(
        files=212,
        bytes=1_468_006,
        chars=1_400_000,
        lines=38211,
        est_tokens=350_000,
        invalid_utf8_files=0,
        skipped={"ignored": ["x"] * 31, "hidden": ["x"] * 6, "binary": ["x"] * 3},
    )
    ctx = Context(tmp_path / "c.txt", "directory", [], stats, "")
    assert ctx.summary() == (
        "context: 212 files, 1.4 MB, 38,211 lines, ~350k tokens; skipped 40 (31 ignored, 6 hidden, 3 binary)"
    )
    stats.skipped, stats.files, stats.est_tokens, stats.invalid_utf8_files = {}, 1, 2_500_000, 1
    assert ctx.summary() == "context: 1 file, 1.4 MB, 38,211 lines, ~2.5M tokens, 1 with invalid UTF-8"


def test_large_file_streams_with_flat_memory(chdir_tmp: Path) -> None:
    big = chdir_tmp / "big.log"
    line = "2024-01-01 12:00:00 INFO ünïcode payload 😀 " + "x" * 60 + "\n"
    with open(big, "w", encoding="utf-8", newline="") as f:
        for _ in range(40):  # ~40 MB
            f.write(line * 10_000)
    tracemalloc.start()
    try:
        ctx = load(["big.log"], chdir_tmp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes: not streaming"
    assert ctx.stats.lines == 400_000
    assert ctx.stats.bytes == big.stat().st_size
    assert ctx.stats.chars == 400_000 * len(line)
    assert ctx.path.stat().st_size == big.stat().st_size  # valid UTF-8 round-trips byte for byte


# --- parse_size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", 1024),
        ("0", 0),
        ("500k", 500 * 1024),
        ("500K", 500 * 1024),
        ("10M", 10 * 1024**2),
        ("1G", 1024**3),
        ("1.5MB", int(1.5 * 1024**2)),
        ("2 KiB", 2048),
        ("100b", 100),
        (" 3m ", 3 * 1024**2),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "10X", "-5M", "1.2.3", "M", "10 M B"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(InputError, match="invalid size"):
        parse_size(text)


# --- a real tree ----------------------------------------------------------------------------------


def test_real_tree_loghub(tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
    if not data.is_dir():
        pytest.skip(f"shared test data not present at {data}")
    ctx = load_context([str(data)], tmp_path, LoadOptions())
    assert ctx.kind == "directory" and ctx.stats.files > 0
    text = text_of(ctx)
    assert len(text) == ctx.stats.chars
    for f in ctx.files[:2] + ctx.files[-1:]:
        assert text[f.start : f.end] == Path(f.path).read_bytes().decode("utf-8", errors="replace")


@pytest.mark.parametrize(
    ("texts", "width"),
    [(["ascii\n", "b\n"], 1), (["café\n", "b\n"], 1), (["ascii\n", "€ 5\n"], 2), (["a\n", "ok 😀\n"], 4)],
)
def test_the_str_width_is_that_of_the_widest_character_in_any_file(tmp_path: Path, texts: list[str], width):
    """The REPL's `context` is one str: one character beyond the BMP in any file makes the whole
    of it four bytes a character (PEP 393), which is what --memory must hold."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, text in enumerate(texts):
        (tree / f"f{i}.txt").write_text(text, encoding="utf-8")
    ctx = load([str(tree)], tmp_path)
    assert ctx.stats.char_width == width
    text = ctx.path.read_text(encoding="utf-8")
    assert ctx.stats.char_width == ctxmod.str_width(text)
    assert ctxmod.str_bytes(ctx.stats) == len(text) * width
