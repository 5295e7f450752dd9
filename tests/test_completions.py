"""Shell completions: generated from the CLI, committed, and checked for staleness and syntax.

bash is always present, so its script is also exercised for real (COMP_WORDS in, COMPREPLY out).
zsh and fish are checked with their own parsers and by completing a line when installed; when
they are not, the tests assert on the script's content instead of skipping.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import typer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gen-completions.py"
COMPLETIONS = REPO / "completions"
BASH, ZSH, FISH = COMPLETIONS / "rlm.bash", COMPLETIONS / "_rlm", COMPLETIONS / "rlm.fish"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_completions", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_completions"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def rlm_tree():
    from rlmcli.cli.app import app

    return gen.read_tree(typer.main.get_command(app))


def test_committed_completions_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0, f"{proc.stderr}(run: python scripts/gen-completions.py)"


def test_check_names_stale_and_missing_files(tmp_path: Path):
    write = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, timeout=60
    )
    assert write.returncode == 0
    (tmp_path / "rlm.fish").write_text("# edited by hand\n")
    (tmp_path / "_rlm").unlink()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "rlm.fish" in proc.stderr and "_rlm" in proc.stderr and "rlm.bash" not in proc.stderr


def test_every_command_and_option_is_in_every_script():
    tree = rlm_tree()
    texts = {path.name: path.read_text(encoding="utf-8") for path in (BASH, ZSH, FISH)}
    assert {"ask", "sandbox"} <= {c.path[-1] for c in tree.children}
    for node in tree.walk():
        for name, text in texts.items():
            assert node.path[-1] in text, (name, node.key)
            for option in node.options:
                for flag in option.names:
                    spelled = {"rlm.fish": f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}"}
                    assert spelled.get(name, flag) in text, (name, node.key, flag)


# -- bash -----------------------------------------------------------------------------------


def bash_complete(*words: str, cwd: Path = REPO) -> list[str]:
    """What the bash script offers with the cursor on the last of `words`."""
    program = (
        f"source {BASH}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()\n'
        '_rlm; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "-c", program, "bash", *words], capture_output=True, text=True, cwd=cwd, timeout=30
    )
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_script_parses():
    proc = subprocess.run(["bash", "-n", str(BASH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_bash_completes_commands_options_choices_and_paths(tmp_path: Path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "build.log").write_text("")
    assert {"ask", "sandbox"} <= set(bash_complete("rlm", ""))
    assert bash_complete("rlm", "sandbox", "") == ["build", "check", "prune"]
    assert bash_complete("rlm", "ask", "--sand") == ["--sandbox"]
    assert bash_complete("rlm", "ask", "--sandbox", "") == ["auto", "docker", "local", "process"]
    assert bash_complete("rlm", "ask", "--sandbox", "=", "d") == ["docker"]  # --sandbox=d, split at =
    assert bash_complete("rlm", "ask", "--sandbox=d") == ["--sandbox=docker"]
    assert bash_complete("rlm", "ask", "-m", "", cwd=tmp_path) == []  # a model name: no files
    assert sorted(bash_complete("rlm", "ask", "-m", "x", "", cwd=tmp_path)) == ["build.log", "repo"]
    assert bash_complete("rlm", "ask", "--sandbox", "local", "bu", cwd=tmp_path) == ["build.log"]
    # A path that looks like a subcommand is a path: `sandbox` does not switch commands here.
    assert bash_complete("rlm", "ask", "sandbox", "--ti") == ["--timeout"]
    assert bash_complete("rlm", "sandbox", "build", "--tag", "") == []


# -- zsh ------------------------------------------------------------------------------------


def test_zsh_script_content():
    text = ZSH.read_text(encoding="utf-8")
    assert text.startswith("#compdef rlm\n")
    for node in rlm_tree().walk():
        assert f"\n{node.func}() {{\n" in text
    assert ":sandbox:(auto docker local process)'" in text
    assert "'*:paths:_files'" in text
    assert "compdef _rlm rlm" in text


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh not installed: test_zsh_script_content covers it")
def test_zsh_script_parses():
    proc = subprocess.run(["zsh", "-n", str(ZSH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# Sourced by an interactive zsh: load _rlm from $fpath as users do, record every candidate a
# completion function offers (compadd calls that only query candidates pass through), and make
# TAB leave a marker once completion is done.
ZSH_RC = r"""
PS1=''
fpath=(COMPLETIONS $fpath)
autoload -U compinit && compinit -u -D
compadd() {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  local -a hits
  builtin compadd -A hits "$@"
  local r=$?
  print -rl -- $hits >> OUT
  return $r
}
tab-then-mark() { zle complete-word; print done > DONE; }
zle -N tab-then-mark
bindkey '^I' tab-then-mark
"""

# Drives that zsh on a pseudo-terminal: types the line and TAB, never a newline (the line never
# runs), and waits for the marker.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "source ${(q)1}"
zpty -n -w z "$2"$'\t'
for i in {1..400}; do [[ -e $3 ]] && break; sleep 0.05; done
zpty -d z
"""


def zsh_complete(line: str, tmp_path: Path) -> list[str]:
    """What zsh offers for `line` + TAB."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    out, done = work / "offered", work / "done"
    rc = work / "rc.zsh"
    rc.write_text(
        ZSH_RC.replace("COMPLETIONS", str(COMPLETIONS)).replace("OUT", str(out)).replace("DONE", str(done))
    )
    (work / "driver.zsh").write_text(ZSH_DRIVER)
    subprocess.run(["zsh", "-f", str(work / "driver.zsh"), str(rc), line, str(done)], timeout=60)
    assert done.exists(), "zsh did not finish completing"
    return out.read_text().split() if out.exists() else []


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh not installed: test_zsh_script_content covers it")
def test_zsh_completes_commands_and_choices(tmp_path: Path):
    assert {"ask", "sandbox"} <= set(zsh_complete("rlm ", tmp_path))
    assert zsh_complete("rlm ask --sandbox ", tmp_path) == ["auto", "docker", "local", "process"]
    assert zsh_complete("rlm sandbox ", tmp_path) == ["build", "check", "prune"]
    assert zsh_complete("rlm completion ", tmp_path) == ["bash", "zsh", "fish"]


# -- fish -----------------------------------------------------------------------------------


def test_fish_script_content():
    text = FISH.read_text(encoding="utf-8")
    assert "complete -c rlm -f" in text
    assert "complete -c rlm -n '__rlm_is \"rlm ask\"' -l sandbox -x -a 'auto docker local process'" in text
    assert "complete -c rlm -n '__rlm_is \"rlm ask\"' -F" in text  # PATH arguments are files
    assert "complete -c rlm -n '__rlm_is \"rlm sandbox\"' -a 'prune'" in text


@pytest.mark.skipif(not shutil.which("fish"), reason="fish not installed: test_fish_script_content covers it")
def test_fish_script_parses_and_completes(tmp_path: Path):
    proc = subprocess.run(["fish", "--no-execute", str(FISH)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr

    def complete(line: str) -> list[str]:
        command = f"source {FISH}; complete -C {gen._fq(line)}"
        proc = subprocess.run(
            ["fish", "--no-config", "-c", command], capture_output=True, text=True, timeout=30, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        return [line.split("\t")[0] for line in proc.stdout.splitlines()]

    (tmp_path / "build.log").write_text("")
    assert {"ask", "sandbox"} <= set(complete("rlm "))
    assert complete("rlm ask --sandbox ") == ["auto", "docker", "local", "process"]
    assert complete("rlm ask --sandbox=d") == ["--sandbox=docker"]
    assert complete("rlm ask -m x bu") == ["build.log"]
    assert complete("rlm ask -m ") == []
    assert complete("rlm sandbox ") == ["build", "check", "prune"]
    assert sorted(complete("rlm completion ")) == ["bash", "fish", "zsh"]


# -- the generator on a CLI with more commands ------------------------------------------------


def test_generates_nested_groups_with_their_own_options(tmp_path: Path):
    """`rlm logs` (a group that also runs on its own, with options) and a file argument."""
    from rlmcli.cli import app as cli
    from rlmcli.cli.logs import logs_app

    app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
    app.command(name="ask")(cli.ask)
    app.add_typer(logs_app, name="logs")

    @app.command()
    def replay(trace: str = typer.Argument(..., help="A trace file.")) -> None:
        """Replay a trace."""

    scripts = gen.render_all(gen.read_tree(typer.main.get_command(app)))
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
    bash = scripts["rlm.bash"]
    assert "'rlm logs') subs='show path' opts='--limit -n --json" in bash
    assert "'rlm replay') subs='' opts='--help -h' valopts='' files=1" in bash
    assert "_rlm_logs_show() {" in scripts["_rlm"] and "'(--limit -n)-n+[How many runs" in scripts["_rlm"]
    assert "-n '__rlm_is \"rlm logs\"' -l limit -s n -x" in scripts["rlm.fish"]
    assert subprocess.run(["bash", "-n", str(tmp_path / "rlm.bash")], timeout=30).returncode == 0
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n", str(tmp_path / "_rlm")], timeout=30).returncode == 0
    if shutil.which("fish"):
        assert (
            subprocess.run(["fish", "--no-execute", str(tmp_path / "rlm.fish")], timeout=30).returncode == 0
        )


def test_short_descriptions():
    assert (
        gen.short("Memory cap of the REPL, e.g. 512m, 2g. \\[default: 1g]")
        == "Memory cap of the REPL, e.g. 512m, 2g."
    )
    assert gen.short("First sentence. Second one.") == "First sentence."
    assert gen.short("word " * 40).endswith("...") and len(gen.short("word " * 40)) <= 80


def test_bash_completes_instructions_as_a_value_not_a_path(tmp_path: Path):
    (tmp_path / "build.log").write_text("")
    assert bash_complete("rlm", "ask", "--instr") == ["--instructions"]
    assert bash_complete("rlm", "ask", "-s", "", cwd=tmp_path) == []  # free text: no file names
    assert bash_complete("rlm", "ask", "-s", "x", "bu", cwd=tmp_path) == ["build.log"]


# -- rlm completion SHELL and the wheel ---------------------------------------------------------


def test_bash_completes_the_completion_command_with_its_shells():
    assert "completion" in bash_complete("rlm", "")
    assert bash_complete("rlm", "completion", "") == ["bash", "zsh", "fish"]
    assert bash_complete("rlm", "completion", "z") == ["zsh"]


@pytest.mark.parametrize("shell, script", [("bash", BASH), ("zsh", ZSH), ("fish", FISH)])
def test_rlm_completion_prints_the_script(run_cli, shell, script):
    proc = run_cli(["completion", shell])
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout == script.read_bytes()


def test_rlm_completion_of_an_unknown_shell_is_a_usage_error(run_cli):
    proc = run_cli(["completion", "tcsh"])
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"tcsh" in proc.stderr


def test_the_wheel_carries_the_scripts_and_its_rlm_prints_them(tmp_path: Path):
    """What `pip install .` installs: the built wheel holds the three scripts, and `rlm completion`
    run from the unpacked wheel alone (no source tree beside it) prints them."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("rlm_cli-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for script in (BASH, ZSH, FISH):
            assert archive.read(f"rlmcli/_completions/{script.name}") == script.read_bytes()
        archive.extractall(tmp_path / "site")
    assert not any(name.startswith("completions/") for name in names)  # inside the package only

    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}  # its dependencies: this interpreter's
    program = "import sys, rlmcli.cli.app as a; print(a.__file__, file=sys.stderr); a.app()"
    proc = subprocess.run(
        [sys.executable, "-c", program, "completion", "zsh"], capture_output=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode().strip() == str(tmp_path / "site" / "rlmcli" / "cli" / "app.py")
    assert proc.stdout == ZSH.read_bytes()
