"""Directories are read as ripgrep reads them: on trees built for each case, the files rlm loads
are the files `rg --files` lists, run in the same place with the same environment.

Cases: a parent `.gitignore` applying to `rlm ask proj/sub/`, the global excludes file (git's
default place under XDG_CONFIG_HOME, and `core.excludesFile` in ~/.gitconfig), `.git/info/exclude`,
`-g '!*.csv'` and mixed `-g` globs, negations, anchored patterns, nested directories, a nested
repository, a walk root inside a directory its parent ignores, `.ignore` over `.gitignore`, and
`--no-ignore`. Trees hold text files only (rg lists binary files, rlm skips them) and no symlinks.

Where rlm means to differ from rg it is not compared: a plain `-g` glob admits a file only if no
ignore rule drops it (rg's overrides every ignore rule), and outside a git tree `.gitignore` files
still apply (rg reads them only in a repository).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ask_args
from fake_llm import reply

from rlmcli.context import load_context
from rlmcli.walk import LoadOptions

RG = shutil.which("rg")


@pytest.fixture
def rg() -> str:
    if RG is None:
        if os.environ.get("CI") or os.environ.get("RLM_REQUIRE_DOCKER"):
            pytest.fail("ripgrep (rg) is required here: scripts/provision.sh installs it")
        pytest.skip("ripgrep (rg) is not installed: these tests compare rlm's file list with `rg --files`")
    return RG


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and XDG_CONFIG_HOME of this test's own (no global git config of the machine)."""
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("RIPGREP_CONFIG_PATH", raising=False)
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    return home


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def repo(root: Path, files: dict[str, str]) -> None:
    """A git work tree as git and rg see it: a `.git` directory (with `info/exclude` if given)."""
    (root / ".git" / "info").mkdir(parents=True, exist_ok=True)
    make_tree(root, files)


def loaded(cwd: Path, path: str, *globs: str, no_ignore: bool = False) -> list[str]:
    """The files rlm loads for `path` run from `cwd`, relative to `path`, sorted."""
    os.chdir(cwd)
    ctx = load_context([path], cwd.parent / "work", LoadOptions(include=list(globs), no_ignore=no_ignore))
    prefix = path if path.endswith("/") else path + "/"
    assert all(f.path.startswith(prefix) for f in ctx.files)
    return sorted(f.path[len(prefix) :] for f in ctx.files)


def rg_files(rg: str, directory: Path, *globs: str, no_ignore: bool = False) -> list[str]:
    """What `rg --files` run in `directory` lists, sorted. (Run from inside: ripgrep 13 given a
    relative path like `proj/a` skips the anchored patterns of the parents' .gitignore files.)"""
    args = [rg, "--files", *(a for g in globs for a in ("-g", g))] + (["--no-ignore"] if no_ignore else [])
    out = subprocess.run(args, cwd=directory, capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode in (0, 1), out.stderr  # 1: nothing listed
    return sorted(line.removeprefix("./") for line in out.stdout.splitlines())


@pytest.fixture
def here(tmp_path: Path):
    """Run from a directory of the test's own, back where we were afterwards."""
    before = os.getcwd()
    (tmp_path / "cwd").mkdir()
    yield tmp_path / "cwd"
    os.chdir(before)


PROJ = {
    ".gitignore": "*.secret\nsecret.txt\n/top.txt\nbuild/\n",
    "top.txt": "ignored at the root only",
    "sub/top.txt": "not anchored here: kept",
    "sub/a.secret": "s",
    "sub/secret.txt": "s",
    "sub/notes.md": "kept",
    "sub/deep/x.txt": "kept",
    "sub/deep/y.secret": "s",
    "sub/build/out.txt": "ignored: build/ anywhere",
}


def test_parent_gitignore_applies_below_the_repository_root(rg, home, here):
    repo(here / "proj", PROJ)
    want = ["deep/x.txt", "notes.md", "top.txt"]
    assert rg_files(rg, here / "proj/sub") == want  # the reference itself is what we think
    assert loaded(here, "proj/sub") == want
    assert loaded(here, "proj/sub/") == want
    # From inside: `rlm ask .` in proj/sub, as `rg --files` there.
    assert loaded(here / "proj" / "sub", ".") == rg_files(rg, here / "proj" / "sub") == want


def test_parent_gitignore_of_a_deeper_walk(rg, home, here):
    repo(here / "proj", PROJ)
    assert loaded(here, "proj/sub/deep") == rg_files(rg, here / "proj/sub/deep") == ["x.txt"]
    assert (
        loaded(here, "proj")
        == rg_files(rg, here / "proj")
        == ["sub/deep/x.txt", "sub/notes.md", "sub/top.txt"]
    )


def test_outside_a_git_tree_parent_gitignore_does_not_apply(rg, home, here):
    make_tree(here / "proj", {".gitignore": "*.secret\n", "sub/a.secret": "s", "sub/b.txt": "b"})
    assert loaded(here, "proj/sub") == rg_files(rg, here / "proj/sub") == ["a.secret", "b.txt"]


def test_walk_root_inside_a_directory_its_parent_ignores(rg, home, here):
    repo(here / "proj", {".gitignore": "build\n*.log\n", "build/out.txt": "o", "build/run.log": "l"})
    assert loaded(here, "proj/build") == rg_files(rg, here / "proj/build") == ["out.txt"]


def test_global_excludes_at_gits_default_place(rg, home, here):
    make_tree(home / ".config" / "git", {"ignore": "*.key\n.env.local\nscratch/\n"})
    repo(here / "proj", {"sub/id.key": "k", "sub/scratch/a.txt": "a", "sub/main.py": "m", "other/b.key": "k"})
    want = ["main.py"]
    assert rg_files(rg, here / "proj/sub") == want
    assert loaded(here, "proj/sub") == want
    assert loaded(here, "proj") == rg_files(rg, here / "proj") == ["sub/main.py"]


def test_global_excludes_named_by_gitconfig(rg, home, here):
    make_tree(
        home,
        {".gitconfig": "[user]\n\tname = x\n[core]\n\texcludesFile = ~/my-ignore\n", "my-ignore": "*.pem\n"},
    )
    make_tree(home / ".config" / "git", {"ignore": "*.txt\n"})  # not read: core.excludesFile wins
    repo(here / "proj", {"a.pem": "k", "b.txt": "b", "c.md": "c"})
    assert loaded(here, "proj") == rg_files(rg, here / "proj") == ["b.txt", "c.md"]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed: it is the reference here")
def test_quoted_excludes_file_as_git_reads_it(home, here):
    """A quoted value, as `git config core.excludesFile "..."` may write it: ripgrep 13 does not
    unquote it, git does; rlm reads it as git (the reference here) does."""
    make_tree(
        home, {".gitconfig": '[core]\n\texcludesFile = "~/my ignore" ; a comment\n', "my ignore": "*.pem\n"}
    )
    make_tree(here / "proj", {"a.pem": "k", "b.txt": "b"})
    subprocess.run(["git", "init", "-q", "proj"], cwd=here, check=True, env=dict(os.environ))
    git = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=here / "proj",
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
    )
    assert git.stdout.split() == ["b.txt"]
    assert loaded(here, "proj") == ["b.txt"]


def test_global_excludes_do_not_apply_outside_a_git_tree(rg, home, here):
    make_tree(home / ".config" / "git", {"ignore": "*.key\n"})
    make_tree(here / "plain", {"id.key": "k", "a.txt": "a"})
    assert loaded(here, "plain") == rg_files(rg, here / "plain") == ["a.txt", "id.key"]


def test_info_exclude_of_the_repository_applies_to_a_subdirectory(rg, home, here):
    repo(
        here / "proj",
        {
            ".git/info/exclude": "*.tmp\n/sub/local.txt\n",
            "sub/a.tmp": "t",
            "sub/local.txt": "l",
            "sub/b.txt": "b",
        },
    )
    assert loaded(here, "proj/sub") == rg_files(rg, here / "proj/sub") == ["b.txt"]


def test_negated_glob_excludes(rg, home, here):
    make_tree(here / "data", {"a.csv": "1", "b.txt": "b", "sub/c.csv": "2", "sub/d.md": "d"})
    assert loaded(here, "data", "!*.csv") == rg_files(rg, here / "data", "!*.csv") == ["b.txt", "sub/d.md"]
    assert loaded(here, "data", "!sub") == rg_files(rg, here / "data", "!sub") == ["a.csv", "b.txt"]


def test_mixed_globs_last_one_wins(rg, home, here):
    make_tree(here / "data", {"a.txt": "a", "b.txt": "b", "c.md": "c", "sub/d.txt": "d", "sub/e.csv": "e"})
    for globs in [("*.txt", "!b.txt"), ("!b.txt", "*.txt"), ("!*.txt", "a.txt"), ("*.txt", "*.md", "!sub")]:
        assert loaded(here, "data", *globs) == rg_files(rg, here / "data", *globs), globs
    assert loaded(here, "data", "*.txt", "!b.txt") == ["a.txt", "sub/d.txt"]


def test_negations_across_levels_and_kinds(rg, home, here):
    repo(
        here / "proj",
        {
            ".gitignore": "*.log\n!keep.log\n",
            ".ignore": "!special.log\n",  # .ignore outranks every .gitignore, deeper ones too
            "keep.log": "k",
            "a.log": "a",
            "sub/.gitignore": "!important.log\n*.tmp\nspecial.log\n",
            "sub/important.log": "i",
            "sub/other.log": "o",
            "sub/special.log": "s",
            "sub/x.tmp": "x",
            "sub/x.txt": "x",
        },
    )
    want = ["keep.log", "sub/important.log", "sub/special.log", "sub/x.txt"]
    assert rg_files(rg, here / "proj") == want
    assert loaded(here, "proj") == want
    assert (
        loaded(here, "proj/sub")
        == rg_files(rg, here / "proj/sub")
        == ["important.log", "special.log", "x.txt"]
    )


def test_anchored_patterns_in_nested_directories(rg, home, here):
    repo(
        here / "proj",
        {
            ".gitignore": "/a/b/c/skip.txt\na/**/gen/\ndocs/*.html\n",
            "a/b/c/skip.txt": "s",
            "a/b/c/keep.txt": "k",
            "a/b/.gitignore": "/c/local.txt\n",
            "a/b/c/local.txt": "l",
            "a/x/gen/g.txt": "g",
            "a/b/c/gen/g.txt": "g",
            "docs/i.html": "h",
            "docs/more/j.html": "kept: docs/*.html is anchored and one level",
        },
    )
    want = ["a/b/c/keep.txt", "docs/more/j.html"]
    assert rg_files(rg, here / "proj") == want
    assert loaded(here, "proj") == want
    for sub in ("proj/a", "proj/a/b", "proj/a/b/c", "proj/docs"):
        assert loaded(here, sub) == rg_files(rg, here / sub), sub


def test_nested_repository_starts_gits_rules_afresh(rg, home, here):
    repo(
        here / "proj",
        {".gitignore": "*.dat\n", "a.dat": "a", "vendor/lib/b.dat": "b", "vendor/lib/c.txt": "c"},
    )
    (here / "proj" / "vendor" / "lib" / ".git").mkdir()
    want = ["vendor/lib/b.dat", "vendor/lib/c.txt"]
    assert loaded(here, "proj") == rg_files(rg, here / "proj") == want
    assert loaded(here, "proj/vendor") == rg_files(rg, here / "proj/vendor") == ["lib/b.dat", "lib/c.txt"]


def test_no_ignore_turns_every_rule_off(rg, home, here):
    make_tree(home / ".config" / "git", {"ignore": "*.key\n"})
    repo(
        here / "proj",
        {
            ".gitignore": "*.secret\n",
            ".git/info/exclude": "*.tmp\n",
            "sub/.ignore": "*.md\n",
            "sub/a.secret": "s",
            "sub/b.key": "k",
            "sub/c.tmp": "t",
            "sub/d.md": "d",
            "sub/e.txt": "e",
        },
    )
    want = ["a.secret", "b.key", "c.tmp", "d.md", "e.txt"]
    assert loaded(here, "proj/sub", no_ignore=True) == rg_files(rg, here / "proj/sub", no_ignore=True) == want
    assert loaded(here, "proj/sub") == rg_files(rg, here / "proj/sub") == ["e.txt"]


def test_cli_loads_what_rg_lists(rg, home, tmp_path, fake_llm, run_cli):
    """Through `rlm ask`: the sandbox's `files` are rg's list (the model printed them)."""
    make_tree(home / ".config" / "git", {"ignore": "*.key\n"})
    repo(tmp_path / "proj", {**PROJ, "sub/id.key": "k", "sub/data.csv": "1,2"})
    fake_llm.add_root(reply("", "import json; print('FILES=' + json.dumps(sorted(files)))"), "FINAL(done)")
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    proc = run_cli(ask_args(fake_llm, "proj/sub", extra=["-g", "!*.csv", "--json"]), env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    document = json.loads(proc.stdout)
    shown = json.dumps(fake_llm.root_requests[1]["body"]["messages"][-1]["content"])
    files = json.loads(json.loads(shown).split("FILES=", 1)[1].splitlines()[0])
    want = rg_files(rg, tmp_path / "proj/sub", "!*.csv")
    assert want == ["deep/x.txt", "notes.md", "top.txt"]
    assert files == ["proj/sub/" + name for name in want]
    assert document["context"]["files"] == len(want)
    assert "a.secret" not in proc.stderr.decode() + proc.stdout.decode()
